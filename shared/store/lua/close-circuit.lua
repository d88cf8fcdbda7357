--[[
  Publish that a deployment is healthy again: closes its circuit and forgets any probe. A circuit that
  was open or half-open comes back by slow start, which begins now (ss); one already closed keeps its
  slow start as it is.

  KEYS[1]  deployment state hash
  KEYS[2]  the pool's state index hash (includes/state.lua)

  Output: 1
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
if redis.call('HEXISTS', stateKey, 'ou') == 1 then redis.call('HSET', stateKey, 'ss', nowMs) end
redis.call('HDEL', stateKey, 'ou', 'pl', 'pd')
expireStateWhenIdle(stateKey, KEYS[2], nowMs)
return 1
