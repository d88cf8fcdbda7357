--[[
  Milliseconds since the epoch by the Redis server's clock, never the client's, so that instances
  whose clocks disagree still agree on windows, deadlines and cooldowns. Callers' deadlines (ARGV of
  the booking scripts) are in this clock too: the RedisStore converts with its estimate of the offset.
]]
local function redisNowMs()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Microseconds since the epoch (exact: about 2^51 in this century); math.floor(us / 1000) is the ms.
local function redisNowUs()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Keeps a key alive until at least `deadline` (epoch ms): its TTL is raised, never lowered.
local function keepKeyUntil(key, deadline, nowMs)
  local needed = deadline - nowMs
  if needed > 0 and redis.call('PTTL', key) < needed then
    redis.call('PEXPIRE', key, needed)
  end
end

-- Whether a call came in after its caller's deadline (epoch ms by this server's clock, '' = none): the
-- client had given up on it (a command timeout), so a booking made now would be work nobody waits for.
local function pastDeadline(deadlineArg, nowMs)
  local deadline = tonumber(deadlineArg)
  return deadline ~= nil and nowMs > deadline
end
