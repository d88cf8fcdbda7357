--[[
  End a lease. Idempotent: only a lease still present changes anything. With a charge, replaces the
  reservation in the bucket it was booked in by the real cost (while that bucket is in the window).
  Clears the half-open probe marker if this lease was the probe (the circuit itself stays as it is).
  Then, lease live or not, applies what the deployment reported about its own counters: where it has
  used more than our window holds, the deficit is booked: tokens spread over the window's buckets (they
  leave as Azure's window slides), requests into the current bucket of the short window (which also
  count in the window). Never lowers usage. The observation is skipped
  when the call comes in past the caller's deadline: figures read then, applied later, would count
  again what left the window in between. Ending the lease and replacing the reservation by the charge
  are right whenever they run (the lease would only have counted until it expired), so they always do.

  KEYS[1]  deployment leases ZSET
  KEYS[2]  deployment usage window hash
  KEYS[3]  deployment state hash
  KEYS[4]  the pool's in-flight hash (includes/leases.lua)
  KEYS[5]  the pool's state index hash (includes/state.lua)

  ARGV[1]  lease id
  ARGV[2]  bucket the reservation was booked in
  ARGV[3]  tokens reserved
  ARGV[4]  tokens charged ('' = keep the reservation)
  ARGV[5]  window length (ms)
  ARGV[6]  observed tokens used in the deployment's window: tpm - remaining tokens ('' = not observed)
  ARGV[7]  observed requests in its short window: ceil(rpm / 6) - remaining requests ('' = not observed)
           (whole numbers >= 0, clamped by the caller)
  ARGV[8]  the caller's deadline (epoch ms, Redis clock; '' = none), for the observation only
  ARGV[9]  1 when the lease was granted as the half-open probe (only such a lease can be the marker's)
  ARGV[10] 1 to withdraw the booking (its request never left): tokens and the request leave the window,
           ARGV[4] ignored

  Output: 1 when the lease was live and is now ended, 0 when it was already gone.
]]
--- @include "includes/time.lua"
--- @include "includes/leases.lua"
--- @include "includes/state.lua"
--- @include "includes/window.lua"

local leasesKey, windowKey, stateKey, inflightKey, stateIndexKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local leaseId = ARGV[1]
local bucket = tonumber(ARGV[2])
local reserved = tonumber(ARGV[3])
local charged = tonumber(ARGV[4])
local windowMs = tonumber(ARGV[5])
local observedTokens = tonumber(ARGV[6])
local observedRequests = tonumber(ARGV[7])
local nowMs = redisNowMs()
local nowBucket = bucketOf(nowMs, windowMs)

if ARGV[9] == '1' and redis.call('HGET', stateKey, 'pl') == leaseId then
  redis.call('HDEL', stateKey, 'pl', 'pd')
  expireStateWhenIdle(stateKey, stateIndexKey, nowMs)
end

local removed = removeLease(leasesKey, inflightKey, leaseId)
if removed == 1 and ARGV[10] == '1' then
  local newestBucket = advanceWindow(windowKey, nowBucket)
  adjustWindow(windowKey, newestBucket, bucket, -reserved, windowMs)
  withdrawRequest(windowKey, newestBucket, bucket, windowMs)
elseif removed == 1 and charged then
  local newestBucket = advanceWindow(windowKey, nowBucket)
  adjustWindow(windowKey, newestBucket, bucket, charged - reserved, windowMs)
end

if (observedTokens or observedRequests) and not pastDeadline(ARGV[8], nowMs) then
  local newestBucket, windowTokens, _, shortRequests = advanceWindow(windowKey, nowBucket)
  local tokenDeficit, requestDeficit = 0, 0
  if observedTokens then tokenDeficit = math.max(0, observedTokens - windowTokens) end
  if observedRequests then requestDeficit = math.max(0, observedRequests - shortRequests) end
  spreadOverWindow(windowKey, newestBucket, tokenDeficit, windowMs)
  if requestDeficit > 0 then addToWindow(windowKey, newestBucket, 0, requestDeficit, windowMs) end
end
return removed
