--[[
  Book a request into a client's quota window when it fits: tokens against tpm and requests against
  rpm, both over the sliding window (no short window for clients). A booking without a lease: there is
  no in-flight tracking, only usage.

  KEYS[1]  client quota window hash (the layout of includes/window.lua)

  ARGV[1]  estimated tokens (whole number >= 0)
  ARGV[2]  window length (ms, multiple of 60)
  ARGV[3]  tpm ('' = none)
  ARGV[4]  rpm ('' = none)
  ARGV[5]  the caller's deadline (epoch ms, Redis clock; '' = none): the moment its client gives up on
           this call. Past it nothing is booked (reason 3): nobody waits for the booking.

  Output:
    { 1, bucket, remainingTokens, remainingRequests }            booked into bucket; left after it
    { 0, reason, retryAfterMs, remainingTokens, remainingRequests }
        reason 1 = tokens (also when both do not fit), 2 = requests; retryAfterMs until enough bookings
        leave the window (a window when it never fits); left now
    { 0, 3, 0, -1, -1 }   late: came in past the caller's deadline, nothing booked
    remaining figures are >= 0, -1 when that budget is unlimited
]]
--- @include "includes/time.lua"
--- @include "includes/window.lua"

local windowKey = KEYS[1]
local tokens = tonumber(ARGV[1])
local windowMs = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local rpm = tonumber(ARGV[4])
local nowMs = redisNowMs()
if pastDeadline(ARGV[5], nowMs) then return { 0, 3, 0, -1, -1 } end
local bucketMs = windowMs / WINDOW_BUCKETS
local nowBucket = math.floor(nowMs / bucketMs)

local function remaining(budget, used)
  if not budget then return -1 end
  return math.max(0, budget - used)
end

local newestBucket, windowTokens, windowRequests = advanceWindow(windowKey, nowBucket)
if fitsBudget(tokens, tpm, rpm, windowTokens, windowRequests, nil) then
  bookWindow(windowKey, newestBucket, tokens, windowMs)
  return { 1, newestBucket, remaining(tpm, windowTokens + tokens), remaining(rpm, windowRequests + 1) }
end

local reason = 2
if tpm and windowTokens + tokens > tpm then reason = 1 end
local wait = windowWaitMs(windowKey, newestBucket, nowMs, bucketMs, tokens, tpm, rpm, windowTokens, windowRequests, nil)
local retryAfterMs = windowMs
if wait >= 0 then retryAfterMs = math.max(1, math.ceil(wait)) end
return { 0, reason, retryAfterMs, remaining(tpm, windowTokens), remaining(rpm, windowRequests) }
