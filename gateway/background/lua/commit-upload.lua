--[[
  Stores a validated upload as a file: its reservation is replaced by its real size (never refused
  here: the reservation was at least as large), its metadata is written (from then on it is a file),
  its line index and data chunks expire with it, and it joins its client's file list.

  KEYS[1]  store bytes counter
  KEYS[2]  store sizes HASH
  KEYS[3]  store expiry ZSET
  KEYS[4]  the file's metadata HASH
  KEYS[5]  the client's file list ZSET (purpose batch): file id -> sequence number
  KEYS[6]  the sequence counter (string)
  KEYS[7..] the file's line index, then its data chunks (written by the upload, expiring with it)

  ARGV[1]  now (epoch ms)
  ARGV[2]  the reservation's holder name
  ARGV[3]  the file id (its holder name)
  ARGV[4]  the file's size (bytes)
  ARGV[5]  the file's expiry (epoch ms)
  ARGV[6..] metadata field, value, field, value...

  Output: { 1, sequence number } stored; { 0 } some of the upload's keys are gone (it outlived its
          reservation): nothing is stored
]]
--- @include "includes/budget.lua"
--- @include "includes/keep.lua"

local bytesKey, sizesKey, expiryKey = KEYS[1], KEYS[2], KEYS[3]
local nowMs = tonumber(ARGV[1])
local fileId = ARGV[3]
local size = tonumber(ARGV[4])
local expiresAt = tonumber(ARGV[5])

dropHolder(bytesKey, sizesKey, expiryKey, ARGV[2])
if redis.call('EXISTS', unpack(KEYS, 7)) ~= #KEYS - 6 then
  redis.call('UNLINK', unpack(KEYS, 7))
  return { 0 }
end
addBytes(bytesKey, sizesKey, fileId, size)
redis.call('ZADD', expiryKey, expiresAt, fileId)
for key = 7, #KEYS do redis.call('PEXPIREAT', KEYS[key], expiresAt) end
local seq = redis.call('INCR', KEYS[6])
local fields = { 'seq', seq }
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[4], unpack(fields))
redis.call('PEXPIREAT', KEYS[4], expiresAt)
redis.call('ZADD', KEYS[5], seq, fileId)
keepUntil(KEYS[5], expiresAt, nowMs)
return { 1, seq }
