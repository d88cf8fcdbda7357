--[[
  Deployment state hash: cd = cooldown until, ou = circuit open until (absent when closed),
  pl = lease id of the half-open probe in flight, pd = that probe's deadline, dr = drained since
  (absent when in rotation; set by hand, cleared only by hand), rs = the latest manual reset, ss = when
  the latest slow start began (in the future while the cooldown it follows runs). All times epoch ms.
]]
-- Same as HALF_OPEN_MEMORY_MS in shared/store/constants.ts.
local HALF_OPEN_MEMORY_MS = 86400000
-- Same as RESET_MEMORY_MS in shared/store/constants.ts.
local RESET_MEMORY_MS = 86400000
-- Same as SLOW_START_MEMORY_MS in shared/store/constants.ts: also the longest slow start there is.
local SLOW_START_MEMORY_MS = 600000

-- cooldown until, open until, probe lease, probe deadline, drained (boolean), latest reset (0: none),
-- slow start since (0: none).
local function readState(stateKey)
  local values = redis.call('HMGET', stateKey, 'cd', 'ou', 'pl', 'pd', 'dr', 'rs', 'ss')
  return tonumber(values[1]) or 0, tonumber(values[2]) or 0, values[3], tonumber(values[4]) or 0,
    values[5] ~= false, tonumber(values[6]) or 0, tonumber(values[7]) or 0
end

-- Keep the hash only while something in it still matters, so idle pools leave no garbage. A drained
-- deployment's hash never expires: only an operator brings it back (enable).
local function expireStateWhenIdle(stateKey, nowMs)
  local cooldownUntil, openUntil, _, probeDeadline, drained, resetAt, slowStartSince = readState(stateKey)
  if drained then
    redis.call('PERSIST', stateKey)
    return
  end
  local keepUntil = math.max(cooldownUntil, probeDeadline)
  if openUntil > 0 then
    keepUntil = math.max(keepUntil, openUntil + HALF_OPEN_MEMORY_MS)
  end
  if resetAt > 0 then
    keepUntil = math.max(keepUntil, resetAt + RESET_MEMORY_MS)
  end
  -- A slow start may still be running (no pool's is longer than the memory).
  if slowStartSince > 0 then
    keepUntil = math.max(keepUntil, slowStartSince + SLOW_START_MEMORY_MS)
  end
  if keepUntil <= nowMs then
    redis.call('DEL', stateKey)
  else
    redis.call('PEXPIRE', stateKey, keepUntil - nowMs)
  end
end
