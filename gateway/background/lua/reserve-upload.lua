--[[
  Reserves room for an upload in the Batch API's byte budget, after reaping what expired. Refused, it
  changes nothing but the reaping: no file is ever evicted to make room.

  KEYS[1]  store bytes counter (string)
  KEYS[2]  store sizes HASH: holder -> bytes
  KEYS[3]  store expiry ZSET: holder -> expiry (epoch ms)

  ARGV[1]  now (epoch ms)
  ARGV[2]  the reservation's holder name (upload:<file id>)
  ARGV[3]  bytes to reserve
  ARGV[4]  the reservation's expiry (epoch ms): an upload whose instance died is reaped then
  ARGV[5]  the budget (bytes)
  ARGV[6]  most expired holders reaped by this call

  Output: { 1, bytes in use after } reserved; { 0, bytes in use } refused
]]
--- @include "includes/budget.lua"

local bytesKey, sizesKey, expiryKey = KEYS[1], KEYS[2], KEYS[3]
local nowMs = tonumber(ARGV[1])
local holder = ARGV[2]
local wanted = tonumber(ARGV[3])
local budget = tonumber(ARGV[5])

reapExpired(bytesKey, sizesKey, expiryKey, nowMs, tonumber(ARGV[6]))
local used = tonumber(redis.call('GET', bytesKey)) or 0
if used + wanted > budget then return { 0, used } end
addBytes(bytesKey, sizesKey, holder, wanted)
redis.call('ZADD', expiryKey, tonumber(ARGV[4]), holder)
return { 1, used + wanted }
