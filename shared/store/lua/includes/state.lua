--[[
  Deployment state hash: cd = cooldown until, ou = circuit open until (absent when closed),
  pl = lease id of the half-open probe in flight, pd = that probe's deadline, dr = drained since
  (absent when in rotation; set by hand, cleared only by hand), rs = the latest manual reset, ss = when
  the latest slow start began (in the future while the cooldown it follows runs). All times epoch ms.

  The pool's state index hash says which deployments have a state hash at all: field <state key> = the
  moment that hash expires (epoch ms; -1: never, drained). Acquire reads the index in one command and a
  state hash only where the index has a live entry (most deployments have no state), instead of one HMGET
  per deployment per call. Every write of a state hash ends with expireStateWhenIdle, which keeps the
  hash's expiry and its index entry together.
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

-- The pool's state index as a table: state key -> expiry (epoch ms, -1 never).
local function readStateIndex(indexKey)
  local flat = redis.call('HGETALL', indexKey)
  local index = {}
  for i = 1, #flat, 2 do index[flat[i]] = tonumber(flat[i + 1]) end
  return index
end

-- Whether the index says the state hash may hold something at nowMs.
local function hasState(index, stateKey, nowMs)
  local expiry = index[stateKey]
  return expiry ~= nil and (expiry == -1 or expiry > nowMs)
end

-- Records a state hash's expiry (-1 never, nil gone) in the index, drops entries past their time, and
-- keeps the index as long as its longest entry. Rare: only state writes (health events, probes) run it.
local function indexState(indexKey, stateKey, expiry, nowMs)
  if expiry then
    redis.call('HSET', indexKey, stateKey, expiry)
  else
    redis.call('HDEL', indexKey, stateKey)
  end
  local flat = redis.call('HGETALL', indexKey)
  local latest, forever = 0, false
  for i = 1, #flat, 2 do
    local entry = tonumber(flat[i + 1]) or 0
    if entry == -1 then
      forever = true
    elseif entry <= nowMs then
      redis.call('HDEL', indexKey, flat[i])
    elseif entry > latest then
      latest = entry
    end
  end
  if forever then
    redis.call('PERSIST', indexKey)
  elseif latest > nowMs then
    redis.call('PEXPIRE', indexKey, latest - nowMs)
  end
end

-- Keep the hash only while something in it still matters, so idle pools leave no garbage. A drained
-- deployment's hash never expires: only an operator brings it back (enable). The index follows.
local function expireStateWhenIdle(stateKey, indexKey, nowMs)
  local cooldownUntil, openUntil, _, probeDeadline, drained, resetAt, slowStartSince = readState(stateKey)
  if drained then
    redis.call('PERSIST', stateKey)
    indexState(indexKey, stateKey, -1, nowMs)
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
    indexState(indexKey, stateKey, nil, nowMs)
  else
    redis.call('PEXPIRE', stateKey, keepUntil - nowMs)
    indexState(indexKey, stateKey, keepUntil, nowMs)
  end
end
