--[[
  Publish that a deployment's circuit opened: nobody sends there until it ends, then it is half-open
  (one probe at a time) until closed. Forgets any probe in flight: the next probe starts afresh.

  KEYS[1]  deployment state hash
  KEYS[2]  the pool's state index hash (includes/state.lua)
  ARGV[1]  open time (ms)

  Output: the open end (epoch ms, Redis clock).
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
local openUntil = nowMs + math.max(0, tonumber(ARGV[1]))
redis.call('HDEL', stateKey, 'pl', 'pd')
redis.call('HSET', stateKey, 'ou', openUntil)
expireStateWhenIdle(stateKey, KEYS[2], nowMs)
return openUntil
