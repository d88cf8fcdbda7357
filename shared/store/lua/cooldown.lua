--[[
  Take a deployment out of rotation for every instance; never shortens a longer cooldown.

  KEYS[1]  deployment state hash
  ARGV[1]  cooldown length (ms)

  Output: the cooldown end (epoch ms, Redis clock).
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
local cooldownUntil = readState(stateKey)
local untilMs = math.max(cooldownUntil, nowMs + math.max(0, tonumber(ARGV[1])))
redis.call('HSET', stateKey, 'cd', untilMs)
expireStateWhenIdle(stateKey, nowMs)
return untilMs
