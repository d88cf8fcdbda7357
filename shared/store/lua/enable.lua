--[[
  Bring a drained deployment back into rotation (undoes drain.lua). Its cooldown and circuit are
  whatever they are now: a circuit still open keeps it out, a half-open one lets its probe through.
  Idempotent. The state hash expires again once nothing else in it matters.

  KEYS[1]  deployment state hash
  KEYS[2]  the pool's state index hash (includes/state.lua)

  Output: 1 when the deployment was drained and is in rotation now, 0 when it was not drained.
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local changed = redis.call('HDEL', stateKey, 'dr')
expireStateWhenIdle(stateKey, KEYS[2], redisNowMs())
return changed
