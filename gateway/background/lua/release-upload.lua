--[[
  An upload that will not be stored (a bad file, a limit, a client gone): its reservation leaves the
  budget and what it wrote so far is deleted.

  KEYS[1]  store bytes counter
  KEYS[2]  store sizes HASH
  KEYS[3]  store expiry ZSET
  KEYS[4..] what the upload wrote: its line index and its data chunks

  ARGV[1]  the reservation's holder name

  Output: 1
]]
--- @include "includes/budget.lua"

dropHolder(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if #KEYS > 3 then redis.call('UNLINK', unpack(KEYS, 4)) end
return 1
