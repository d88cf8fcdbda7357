--[[
  Publish that a deployment is healthy again: closes its circuit and forgets any probe.

  KEYS[1]  deployment state hash

  Output: 1
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
redis.call('HDEL', stateKey, 'ou', 'pl', 'pd')
expireStateWhenIdle(stateKey, redisNowMs())
return 1
