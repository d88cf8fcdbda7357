--[[
  Take a deployment out of rotation by hand, for every instance, until enable.lua brings it back:
  acquire.lua treats it as excluded (no lease, no probe, no retry time of its own). Leases in flight
  on it are untouched: they end, renew and release as usual. Cooldown and circuit are kept as they
  are. Idempotent: draining a drained deployment keeps its first drain time. The state hash then
  has no expiry (includes/state.lua): a drain outlives any cooldown or circuit memory.

  KEYS[1]  deployment state hash
  KEYS[2]  the pool's state index hash (includes/state.lua)

  Output: 1 when the deployment was in rotation and is drained now, 0 when it was drained already.
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
local changed = redis.call('HSETNX', stateKey, 'dr', nowMs)
expireStateWhenIdle(stateKey, KEYS[2], nowMs)
return changed
