--[[
  Live leases of one pool, in two places (include time.lua first):
    per deployment   its leases ZSET: leaseId -> deadline (epoch ms); a lease whose deadline has come is dead
    per pool         the in-flight hash: field <leases key> = how many members that ZSET holds, field
                     <leases key>|next = a moment no later than its earliest deadline
  Acquire reads the in-flight hash in one command instead of reaping and counting every deployment's
  ZSET on every call: only a deployment whose `next` has come (it may hold a dead lease) is reaped and
  recounted, so an instance that died stops counting within one lease time, and its dead leases are
  removed once, not looked at on every call. Every write of a leases ZSET goes through the functions
  here, which keep both fields right; a renewal recounts each deployment it touches, so a count that
  ever drifted is right again within a renewal round.
  The keys outlive their latest deadline (keepKeyUntil) only as a garbage backstop.
]]
local NEXT_SUFFIX = '|next'

-- Rewrites one deployment's count and earliest deadline from its ZSET (after a reap or a renewal);
-- returns the count.
local function recountLeases(leasesKey, inflightKey)
  local first = redis.call('ZRANGE', leasesKey, 0, 0, 'WITHSCORES')
  if first[2] == nil then
    redis.call('HDEL', inflightKey, leasesKey, leasesKey .. NEXT_SUFFIX)
    return 0
  end
  local count = redis.call('ZCARD', leasesKey)
  redis.call('HSET', inflightKey, leasesKey, count, leasesKey .. NEXT_SUFFIX, first[2])
  return count
end

-- Removes one deployment's dead leases and recounts it; returns its live count.
local function reapLeases(leasesKey, inflightKey, nowMs)
  redis.call('ZREMRANGEBYSCORE', leasesKey, '-inf', nowMs)
  return recountLeases(leasesKey, inflightKey)
end

-- Live lease count by leases key of the deployments in `declared` (leases key -> true: the call's
-- KEYS, so no undeclared key is touched), and each one's `next`. Reaps first those whose `next` has come.
local function liveLeaseCounts(inflightKey, declared, nowMs)
  local flat = redis.call('HGETALL', inflightKey)
  local counts, nexts, due = {}, {}, {}
  for i = 1, #flat, 2 do
    local field, value = flat[i], tonumber(flat[i + 1]) or 0
    if string.sub(field, -5) == NEXT_SUFFIX then
      local leasesKey = string.sub(field, 1, -6)
      nexts[leasesKey] = value
      if value <= nowMs and declared[leasesKey] then due[#due + 1] = leasesKey end
    else
      counts[field] = value
    end
  end
  for _, leasesKey in ipairs(due) do
    counts[leasesKey] = reapLeases(leasesKey, inflightKey, nowMs)
    nexts[leasesKey] = tonumber(redis.call('HGET', inflightKey, leasesKey .. NEXT_SUFFIX))
  end
  return counts, nexts
end

-- Books a new lease. `knownCount` and `knownNext` are the deployment's fields as liveLeaseCounts read
-- them in this same script (nil: none), so both are written in one command.
local function addLease(leasesKey, inflightKey, leaseId, deadline, knownCount, knownNext, nowMs)
  if redis.call('ZADD', leasesKey, deadline, leaseId) == 1 then
    local next = knownNext
    if next == nil or deadline < next then next = deadline end
    redis.call('HSET', inflightKey, leasesKey, (knownCount or 0) + 1, leasesKey .. NEXT_SUFFIX, next)
  end
  keepKeyUntil(leasesKey, deadline, nowMs)
  keepKeyUntil(inflightKey, deadline, nowMs)
end

-- Ends a lease; 1 when it was there. A count reaching 0 takes the deployment out of the hash (were it
-- ever off, the next renewal of the deployment recounts it).
local function removeLease(leasesKey, inflightKey, leaseId)
  local removed = redis.call('ZREM', leasesKey, leaseId)
  if removed == 1 and redis.call('HINCRBY', inflightKey, leasesKey, -1) <= 0 then
    redis.call('HDEL', inflightKey, leasesKey, leasesKey .. NEXT_SUFFIX)
  end
  return removed
end

-- Live leases of one deployment without writing anything (snapshots).
local function countLiveLeases(leasesKey, nowMs)
  return redis.call('ZCOUNT', leasesKey, '(' .. nowMs, '+inf')
end
