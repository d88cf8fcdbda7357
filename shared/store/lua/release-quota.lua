--[[
  Replace a quota booking's estimate by the real charge in the bucket it was booked in (while that
  bucket is in the window), never below zero. Not idempotent: quota bookings have no lease to end.

  KEYS[1]  client quota window hash

  ARGV[1]  bucket the estimate was booked in
  ARGV[2]  tokens booked
  ARGV[3]  tokens charged
  ARGV[4]  window length (ms)

  Output: 1
]]
--- @include "includes/time.lua"
--- @include "includes/window.lua"

local windowKey = KEYS[1]
local bucket = tonumber(ARGV[1])
local booked = tonumber(ARGV[2])
local charged = tonumber(ARGV[3])
local windowMs = tonumber(ARGV[4])
local newestBucket = advanceWindow(windowKey, bucketOf(redisNowMs(), windowMs))
adjustWindow(windowKey, newestBucket, bucket, charged - booked, windowMs)
return 1
