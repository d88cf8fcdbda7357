--[[
  Clear a deployment's health by hand, for every instance: its cooldown ends, its circuit closes and
  any half-open probe marker is forgotten (a probe lease in flight stays a lease; its verdict is
  heard as any attempt's). Records the moment (rs), so every instance forgets the ejections in a row
  it counted before it (gateway/routing/outlier.ts); rs is remembered RESET_MEMORY_MS. Drained stays
  as it is. Idempotent.

  KEYS[1]  deployment state hash

  Output: the reset time (epoch ms, Redis clock).
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
redis.call('HDEL', stateKey, 'cd', 'ou', 'pl', 'pd')
redis.call('HSET', stateKey, 'rs', nowMs)
expireStateWhenIdle(stateKey, nowMs)
return nowMs
