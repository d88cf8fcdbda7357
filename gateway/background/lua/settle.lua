--[[
  Settles lines of a batch: each line's first outcome is kept, any later one dropped (a line run again
  after its instance died), so no custom_id appears twice in the results. A result goes into the
  batch's output results (a 2xx answer) or error results (any other answer, no answer, expired);
  a cancelled line leaves no result. Results count in the byte budget without being refused. When
  this settles the batch's last line, the batch is finalised in the same step: its final status and
  times, and its output and error files (each only when it has lines), which join the client's files.

  KEYS[1]  the batch HASH
  KEYS[2]  the batch's settled lines (bitmap, one bit per line)
  KEYS[3]  the batch's output results HASH: line index -> result line
  KEYS[4]  the batch's error results HASH
  KEYS[5]  store bytes counter
  KEYS[6]  store sizes HASH
  KEYS[7]  store expiry ZSET
  KEYS[8]  the output file's metadata HASH
  KEYS[9]  the error file's metadata HASH
  KEYS[10] the input file's metadata HASH
  KEYS[11] the client's file list ZSET (purpose batch_output)
  KEYS[12] the sequence counter

  ARGV[1]  now (epoch ms)
  ARGV[2..] per line: its index (0-based), its kind (ok | error | expired | cancelled), its result line
            ('' for cancelled)

  Output: { lines settled by this call, 1 when the batch was finalised by it }
]]
--- @include "includes/budget.lua"
--- @include "includes/keep.lua"

local batchKey = KEYS[1]
local nowMs = tonumber(ARGV[1])
if redis.call('EXISTS', batchKey) == 0 then return { 0, 0 } end
local total = tonumber(redis.call('HGET', batchKey, 'total'))
local dropAt = tonumber(redis.call('HGET', batchKey, 'dropAt'))
local ids = { out = redis.call('HGET', batchKey, 'outId'), err = redis.call('HGET', batchKey, 'errId') }

local settled = 0
for i = 2, #ARGV, 3 do
  local index = tonumber(ARGV[i])
  local kind = ARGV[i + 1]
  local line = ARGV[i + 2]
  if index ~= nil and index >= 0 and index < total and redis.call('GETBIT', KEYS[2], index) == 0 then
    redis.call('SETBIT', KEYS[2], index, 1)
    settled = settled + 1
    if kind ~= 'cancelled' then
      local which = kind == 'ok' and 'out' or 'err'
      local size = #line + 1
      redis.call('HSET', which == 'out' and KEYS[3] or KEYS[4], index, line)
      redis.call('HINCRBY', batchKey, which .. 'Lines', 1)
      redis.call('HINCRBY', batchKey, which .. 'Bytes', size)
      redis.call('HINCRBY', batchKey, kind == 'ok' and 'completed' or 'failed', 1)
      if kind == 'expired' then redis.call('HINCRBY', batchKey, 'expiredLines', 1) end
      addBytes(KEYS[5], KEYS[6], ids[which], size)
    end
  end
end
if settled == 0 then return { 0, 0 } end
for key = 2, 4 do keepUntil(KEYS[key], dropAt, nowMs) end

local done = redis.call('HINCRBY', batchKey, 'settled', settled)
local status = redis.call('HGET', batchKey, 'status')
local ended = status == 'completed' or status == 'expired' or status == 'cancelled' or status == 'failed'
if done < total or ended then return { settled, 0 } end

-- The last line: the batch ends now.
local final = 'completed'
if status == 'cancelling' then
  final = 'cancelled'
elseif (tonumber(redis.call('HGET', batchKey, 'expiredLines')) or 0) > 0 then
  final = 'expired'
end
redis.call('HSET', batchKey, 'status', final, 'finalizingAt', nowMs, final .. 'At', nowMs)
redis.call('HSETNX', batchKey, 'inProgressAt', nowMs)
local client = redis.call('HGET', batchKey, 'client')
local batchId = redis.call('HGET', batchKey, 'id')
local files = { { 'out', KEYS[8], 'output', 'outputFileId' }, { 'err', KEYS[9], 'error', 'errorFileId' } }
for _, file in ipairs(files) do
  local which, metaKey, kind, field = file[1], file[2], file[3], file[4]
  local lines = tonumber(redis.call('HGET', batchKey, which .. 'Lines')) or 0
  if lines > 0 then
    local seq = redis.call('INCR', KEYS[12])
    redis.call('HSET', metaKey, 'id', ids[which], 'client', client, 'purpose', 'batch_output', 'kind', kind,
      'filename', batchId .. '_' .. kind .. '.jsonl', 'bytes', redis.call('HGET', batchKey, which .. 'Bytes'),
      'lines', lines, 'createdAt', nowMs, 'expiresAt', dropAt, 'batchId', batchId, 'seq', seq)
    redis.call('PEXPIREAT', metaKey, dropAt)
    redis.call('ZADD', KEYS[11], seq, ids[which])
    keepUntil(KEYS[11], dropAt, nowMs)
    redis.call('HSET', batchKey, field, ids[which])
  else
    dropHolder(KEYS[5], KEYS[6], KEYS[7], ids[which])
  end
end
if redis.call('EXISTS', KEYS[10]) == 1 then redis.call('HINCRBY', KEYS[10], 'inUse', -1) end
return { settled, 1 }
