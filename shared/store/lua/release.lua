--[[
  End a lease. Idempotent: only a lease still present changes anything. With a charge, replaces the
  reservation in the bucket it was booked in by the real cost (while that bucket is in the window).
  Clears the half-open probe marker if this lease was the probe (the circuit itself stays as it is).

  KEYS[1]  deployment leases ZSET
  KEYS[2]  deployment usage window hash
  KEYS[3]  deployment state hash

  ARGV[1]  lease id
  ARGV[2]  bucket the reservation was booked in
  ARGV[3]  tokens reserved
  ARGV[4]  tokens charged ('' = keep the reservation)
  ARGV[5]  window length (ms)

  Output: 1 when the lease was live and is now ended, 0 when it was already gone.
]]
--- @include "includes/time.lua"
--- @include "includes/state.lua"
--- @include "includes/window.lua"

local leasesKey, windowKey, stateKey = KEYS[1], KEYS[2], KEYS[3]
local leaseId = ARGV[1]
local bucket = tonumber(ARGV[2])
local reserved = tonumber(ARGV[3])
local charged = tonumber(ARGV[4])
local windowMs = tonumber(ARGV[5])
local nowMs = redisNowMs()

if redis.call('HGET', stateKey, 'pl') == leaseId then
  redis.call('HDEL', stateKey, 'pl', 'pd')
  expireStateWhenIdle(stateKey, nowMs)
end

local removed = redis.call('ZREM', leasesKey, leaseId)
if removed == 1 and charged then
  local newestBucket = advanceWindow(windowKey, math.floor(nowMs / (windowMs / WINDOW_BUCKETS)))
  adjustWindow(windowKey, newestBucket, bucket, charged - reserved, windowMs)
end
return removed
