--[[
  Wait queue of one pool, first come first served, in two ZSETs with the same members:
    order      ticket -> enqueue time in microseconds by the Redis clock, nudged just past the tail so
               the order is strict even for two tickets in one microsecond
    deadlines  ticket -> deadline (epoch ms); a ticket whose deadline has come is dead (its waiter
               stopped polling) and reaping removes it from both
  Both keys expire with the latest deadline, so a queue nobody polls leaves no garbage.
  Include time.lua first (keepKeyUntil).
]]
-- Removes dead tickets from both ZSETs (in chunks: unpack has a stack limit).
local function reapQueue(orderKey, deadlinesKey, nowMs)
  local dead = redis.call('ZRANGEBYSCORE', deadlinesKey, '-inf', nowMs)
  for first = 1, #dead, 1000 do
    local last = math.min(#dead, first + 999)
    redis.call('ZREM', orderKey, unpack(dead, first, last))
    redis.call('ZREM', deadlinesKey, unpack(dead, first, last))
  end
end

-- The live ticket first in line, or nil when the queue is empty (reap first).
local function queueHead(orderKey)
  return redis.call('ZRANGE', orderKey, 0, 0)[1]
end

-- Puts a ticket at the tail unless it is in already (then it keeps its place), and sets its deadline.
local function waitInQueue(orderKey, deadlinesKey, ticket, nowUs, deadline, nowMs)
  if not redis.call('ZSCORE', orderKey, ticket) then
    local score = nowUs
    local tail = redis.call('ZRANGE', orderKey, -1, -1, 'WITHSCORES')
    local tailScore = tonumber(tail[2])
    if tailScore and tailScore >= score then score = tailScore + 1 end
    redis.call('ZADD', orderKey, score, ticket)
  end
  redis.call('ZADD', deadlinesKey, deadline, ticket)
  keepKeyUntil(orderKey, deadline, nowMs)
  keepKeyUntil(deadlinesKey, deadline, nowMs)
end

local function leaveQueue(orderKey, deadlinesKey, ticket)
  redis.call('ZREM', orderKey, ticket)
  return redis.call('ZREM', deadlinesKey, ticket)
end
