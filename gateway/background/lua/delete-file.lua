--[[
  Deletes a file: an input file (its line index and data chunks) or a batch's output or error file
  (that batch's results of that kind). Its bytes leave the budget. An input file that a batch still
  running reads its lines from is not deleted.

  KEYS[1]  store bytes counter
  KEYS[2]  store sizes HASH
  KEYS[3]  store expiry ZSET
  KEYS[4]  the file's metadata HASH
  KEYS[5]  the client's file list ZSET of the file's purpose
  KEYS[6..] the file's content: an input file's line index and chunks, or the batch's results HASH of that kind

  ARGV[1]  the file id

  Output: { 1 } deleted; { 0 } no such file; { -1, batch id } the input of a batch still running
]]
--- @include "includes/budget.lua"

local fileId = ARGV[1]
if redis.call('EXISTS', KEYS[4]) == 0 then return { 0 } end
if (tonumber(redis.call('HGET', KEYS[4], 'inUse')) or 0) > 0 then
  return { -1, redis.call('HGET', KEYS[4], 'lastBatch') or '' }
end
dropHolder(KEYS[1], KEYS[2], KEYS[3], fileId)
redis.call('UNLINK', KEYS[4], unpack(KEYS, 6))
redis.call('ZREM', KEYS[5], fileId)
return { 1 }
