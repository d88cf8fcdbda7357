--[[
  Start-time fair queuing of one pool's batch lines between clients (gateway/background/lane/fair-order.ts):
  reserves `count` consecutive tags for a batch of `client`, starting at max(virtual time, the client's
  next tag), and moves the client's next tag past them. Lines run in tag order (BullMQ priorities), so
  two clients' batches interleave line by line from the moment the later one arrives, and a client's
  own batches run one after the other.

  KEYS[1]  the pool's tags HASH: client -> the client's next free tag (its last finish tag)

  ARGV[1]  client name
  ARGV[2]  virtual time: the tag of the next line to start in the pool's queue; '' when no line waits,
           which starts a new round: every client's tag is forgotten and tags begin again at 1
  ARGV[3]  number of tags to reserve (lines of the batch)
  ARGV[4]  time to live of the hash (ms): an idle pool's tags are forgotten

  Output: the first tag reserved.
]]
local client = ARGV[1]
local count = tonumber(ARGV[3])
local virtual = 1
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  virtual = math.max(1, tonumber(ARGV[2]))
end
local last = tonumber(redis.call('HGET', KEYS[1], client) or '0')
local first = math.max(virtual, last)
redis.call('HSET', KEYS[1], client, first + count)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return first
