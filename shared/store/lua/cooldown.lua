--[[
  Take a deployment out of rotation for every instance; never shortens a longer cooldown. When this call
  sets or extends the cooldown and the deployment is to come back by slow start (ARGV[2], long cooldowns)
  or a slow start is pending already (ss in the future: it follows the cooldown), the slow start begins
  at the cooldown's new end.

  KEYS[1]  deployment state hash
  KEYS[2]  the pool's state index hash (includes/state.lua)
  ARGV[1]  cooldown length (ms)
  ARGV[2]  '1' = slow start at the cooldown's end; '' or absent = no slow start of its own

  Output: the cooldown end (epoch ms, Redis clock).
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"

local stateKey = KEYS[1]
local nowMs = redisNowMs()
local cooldownUntil, _, _, _, _, _, slowStartSince = readState(stateKey)
local untilMs = math.max(cooldownUntil, nowMs + math.max(0, tonumber(ARGV[1])))
redis.call('HSET', stateKey, 'cd', untilMs)
if untilMs > cooldownUntil and (ARGV[2] == '1' or slowStartSince > nowMs) then
  redis.call('HSET', stateKey, 'ss', untilMs)
end
expireStateWhenIdle(stateKey, KEYS[2], nowMs)
return untilMs
