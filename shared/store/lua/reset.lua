--[[
  Clear a deployment's health by hand, for every instance: its cooldown ends, its circuit closes and
  any half-open probe marker is forgotten (a probe lease in flight stays a lease; its verdict is
  heard as any attempt's). Records the moment (rs), so every instance forgets the ejections in a row
  it counted before it (gateway/routing/outlier.ts); rs is remembered RESET_MEMORY_MS. Drained stays
  as it is. With ARGV[1] (an active probe passed) the deployment comes back by slow start from now
  (ss); without it (an operator) any slow start ends: full traffic at once. Idempotent.

  KEYS[1]  deployment state hash
  KEYS[2]  the pool's state index hash (includes/state.lua)
  ARGV[1]  '1' = slow start from now; '' or absent = none

  Output: the reset time (epoch ms, Redis clock).
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
redis.call('HDEL', stateKey, 'cd', 'ou', 'pl', 'pd')
if ARGV[1] == '1' then
  redis.call('HSET', stateKey, 'rs', nowMs, 'ss', nowMs)
else
  redis.call('HDEL', stateKey, 'ss')
  redis.call('HSET', stateKey, 'rs', nowMs)
end
expireStateWhenIdle(stateKey, KEYS[2], nowMs)
return nowMs
