--[[
  Moves a batch from one of the given statuses to another, stamping when. A batch that is in the
  target status already is left as it is (a second cancel). A transition that ends the batch (failed)
  releases its input file, which may then be deleted.

  KEYS[1]  the batch HASH
  KEYS[2]  its input file's metadata HASH

  ARGV[1]  the target status
  ARGV[2]  the field stamped with now (e.g. cancellingAt)
  ARGV[3]  now (epoch ms)
  ARGV[4]  the statuses it may move from, comma-separated
  ARGV[5]  the batch's `errors` (JSON) to set, or ''
  ARGV[6]  1 when the target status ends the batch

  Output: { 1, previous status } moved; { 2, status } in the target status already;
          { -1, status } not from that status; { 0, '' } no such batch
]]

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return { 0, '' } end
if status == ARGV[1] then return { 2, status } end
if not string.find(',' .. ARGV[4] .. ',', ',' .. status .. ',', 1, true) then return { -1, status } end
redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[2], ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'errors', ARGV[5]) end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[2], 'inUse', -1) end
return { 1, status }
