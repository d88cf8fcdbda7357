--[[
  Live state of every deployment of a pool (counts live leases, advances windows first; writes no lease).

  KEYS[3i - 2]  deployment i: state hash          (i = 1 .. n)
  KEYS[3i - 1]  deployment i: leases ZSET
  KEYS[3i]      deployment i: usage window hash

  ARGV[1]  window length (ms)

  Output: per deployment, 9 numbers in a row:
    in flight, tokens in window, requests in window, cooldown until (0 when past),
    circuit (0 closed, 1 open, 2 half-open), circuit open until (0 when closed),
    drained (1 drained, 0 in rotation), latest manual reset (epoch ms; 0 when none is remembered),
    slow start since (epoch ms; 0 when none is remembered: SLOW_START_MEMORY_MS after it began)
]]
--- @include "includes/time.lua"
--- @include "includes/leases.lua"
--- @include "includes/state.lua"
--- @include "includes/window.lua"

local nowMs = redisNowMs()
local windowMs = tonumber(ARGV[1])
local nowBucket = bucketOf(nowMs, windowMs)
local out = {}
for i = 1, #KEYS / 3 do
  local stateKey, leasesKey, windowKey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local inFlight = countLiveLeases(leasesKey, nowMs)
  local _, tokens, requests = advanceWindow(windowKey, nowBucket)
  local cooldownUntil, openUntil, _, _, drained, resetAt, slowStartSince = readState(stateKey)
  if slowStartSince + SLOW_START_MEMORY_MS <= nowMs then slowStartSince = 0 end
  if cooldownUntil <= nowMs then cooldownUntil = 0 end
  local circuit = 0
  if openUntil > nowMs then circuit = 1 elseif openUntil > 0 then circuit = 2 end
  local base = #out
  out[base + 1] = inFlight
  out[base + 2] = tokens
  out[base + 3] = requests
  out[base + 4] = cooldownUntil
  out[base + 5] = circuit
  out[base + 6] = openUntil
  out[base + 7] = drained and 1 or 0
  out[base + 8] = resetAt
  out[base + 9] = slowStartSince
end
return out
