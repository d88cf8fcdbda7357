--[[
  Creates a batch over an input file, in status validating. The file counts one more batch reading it
  (it cannot be deleted until that batch ends), and it lives at least until the batch's completion
  window ends. The batch's output and error files are registered in the byte budget (empty), under
  the ids they will have; they expire with the batch.

  KEYS[1]  the input file's metadata HASH
  KEYS[2]  the batch HASH
  KEYS[3]  the client's batch list ZSET: batch id -> sequence number
  KEYS[4]  the sequence counter
  KEYS[5]  store sizes HASH
  KEYS[6]  store expiry ZSET
  KEYS[7..] the input file's line index and data chunks

  ARGV[1]  now (epoch ms)
  ARGV[2]  the batch id
  ARGV[3]  the end of the completion window (epoch ms)
  ARGV[4]  when the batch and its results are dropped (epoch ms)
  ARGV[5]  the output file id
  ARGV[6]  the error file id
  ARGV[7..] batch field, value, field, value...

  Output: { 1, sequence number } created; { 0 } the input file is gone
]]
--- @include "includes/keep.lua"

local nowMs = tonumber(ARGV[1])
local batchId = ARGV[2]
local windowEnd = tonumber(ARGV[3])
local dropAt = tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return { 0 } end

redis.call('HINCRBY', KEYS[1], 'inUse', 1)
redis.call('HSET', KEYS[1], 'lastBatch', batchId)
local fileExpiry = tonumber(redis.call('HGET', KEYS[1], 'expiresAt')) or 0
if fileExpiry < windowEnd then
  -- The lines are read until the window ends: the file outlives it.
  redis.call('HSET', KEYS[1], 'expiresAt', windowEnd)
  keepUntil(KEYS[1], windowEnd, nowMs)
  for key = 7, #KEYS do keepUntil(KEYS[key], windowEnd, nowMs) end
  redis.call('ZADD', KEYS[6], 'XX', windowEnd, redis.call('HGET', KEYS[1], 'id'))
end

local seq = redis.call('INCR', KEYS[4])
local fields = { 'seq', seq }
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIREAT', KEYS[2], dropAt)
redis.call('ZADD', KEYS[3], seq, batchId)
keepUntil(KEYS[3], dropAt, nowMs)
for i = 5, 6 do
  redis.call('HSETNX', KEYS[5], ARGV[i], 0)
  redis.call('ZADD', KEYS[6], dropAt, ARGV[i])
end
return { 1, seq }
