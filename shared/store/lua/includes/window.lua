--[[
  Sliding usage window of one deployment in one hash, a ring of 60 bucket slots:
    h          newest bucket (the window holds buckets h-59 .. h, the short window h-9 .. h)
    t, r, s    running totals: tokens and requests in the window, requests in the short window
    t<k>, r<k> tokens / requests booked in the bucket b of the window with b % 60 = k
  A bucket is windowMs / 60 ms (1 s in production); bucket b covers [b * bucketMs, (b + 1) * bucketMs).
  Deployments and clients' quotas share this layout; a quota passes no short-window count (nil) to
  fitsBudget and windowWaitMs, so its rpm holds over the whole window only.
  Same constants and rules as shared/store/constants.ts and shared/store/sliding-window.ts.
]]
local WINDOW_BUCKETS = 60
local SHORT_WINDOW_BUCKETS = 10

-- Slot field names spelled out: formatting numbers into strings costs more in Lua than the rest of
-- a script, and these lookups run for every deployment on every acquire.
local TOKEN_SLOTS = {
  't0', 't1', 't2', 't3', 't4', 't5', 't6', 't7', 't8', 't9', 't10', 't11', 't12', 't13', 't14',
  't15', 't16', 't17', 't18', 't19', 't20', 't21', 't22', 't23', 't24', 't25', 't26', 't27', 't28',
  't29', 't30', 't31', 't32', 't33', 't34', 't35', 't36', 't37', 't38', 't39', 't40', 't41', 't42',
  't43', 't44', 't45', 't46', 't47', 't48', 't49', 't50', 't51', 't52', 't53', 't54', 't55', 't56',
  't57', 't58', 't59'
}
local REQUEST_SLOTS = {
  'r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14',
  'r15', 'r16', 'r17', 'r18', 'r19', 'r20', 'r21', 'r22', 'r23', 'r24', 'r25', 'r26', 'r27', 'r28',
  'r29', 'r30', 'r31', 'r32', 'r33', 'r34', 'r35', 'r36', 'r37', 'r38', 'r39', 'r40', 'r41', 'r42',
  'r43', 'r44', 'r45', 'r46', 'r47', 'r48', 'r49', 'r50', 'r51', 'r52', 'r53', 'r54', 'r55', 'r56',
  'r57', 'r58', 'r59'
}

local function slotOf(bucket)
  return bucket % WINDOW_BUCKETS + 1
end

-- The bucket that holds the moment nowMs, for a window of windowMs.
local function bucketOf(nowMs, windowMs)
  return math.floor(nowMs / (windowMs / WINDOW_BUCKETS))
end

-- Moves the window to nowBucket, dropping the buckets that left it (at most 59 + 10 slots, and only
-- when the bucket changed). Returns the newest bucket (never behind the stored one, in case the server
-- clock stepped back) and the token, request and short-window request totals. Creates no key.
local function advanceWindow(windowKey, nowBucket)
  local totals = redis.call('HMGET', windowKey, 'h', 't', 'r', 's')
  local head = tonumber(totals[1])
  if not head then return nowBucket, 0, 0, 0 end
  local tokens = tonumber(totals[2]) or 0
  local requests = tonumber(totals[3]) or 0
  local shortRequests = tonumber(totals[4]) or 0
  if nowBucket <= head then return head, tokens, requests, shortRequests end
  if nowBucket - head >= WINDOW_BUCKETS then
    redis.call('DEL', windowKey)
    return nowBucket, 0, 0, 0
  end
  local leaving = {}
  for bucket = head - WINDOW_BUCKETS + 1, nowBucket - WINDOW_BUCKETS do
    local slot = slotOf(bucket)
    leaving[#leaving + 1] = TOKEN_SLOTS[slot]
    leaving[#leaving + 1] = REQUEST_SLOTS[slot]
  end
  local leavingWindow = #leaving
  for bucket = head - SHORT_WINDOW_BUCKETS + 1, math.min(head, nowBucket - SHORT_WINDOW_BUCKETS) do
    leaving[#leaving + 1] = REQUEST_SLOTS[slotOf(bucket)]
  end
  if #leaving > 0 then
    local values = redis.call('HMGET', windowKey, unpack(leaving))
    for i = 1, leavingWindow, 2 do
      tokens = tokens - (tonumber(values[i]) or 0)
      requests = requests - (tonumber(values[i + 1]) or 0)
    end
    for i = leavingWindow + 1, #leaving do
      shortRequests = shortRequests - (tonumber(values[i]) or 0)
    end
  end
  if leavingWindow > 0 then
    redis.call('HDEL', windowKey, unpack(leaving, 1, leavingWindow))
  end
  tokens, requests, shortRequests = math.max(0, tokens), math.max(0, requests), math.max(0, shortRequests)
  redis.call('HSET', windowKey, 'h', nowBucket, 't', tokens, 'r', requests, 's', shortRequests)
  return nowBucket, tokens, requests, shortRequests
end

-- Whether a request of `tokens` fits budgets tpm / rpm (nil = unlimited) given the window's totals.
-- shortRequests nil: no short window (client quotas). shortLimit: the short window's limit when not
-- ceil(rpm / 6) (background requests' reduced one).
local function fitsBudget(tokens, tpm, rpm, windowTokens, windowRequests, shortRequests, shortLimit)
  if tpm and windowTokens + tokens > tpm then return false end
  if rpm and windowRequests + 1 > rpm then return false end
  if rpm and shortRequests and shortRequests + 1 > (shortLimit or math.ceil(rpm / 6)) then return false end
  return true
end

-- Adds whole tokens and requests (>= 0) to the newest bucket (the window must be advanced to it).
local function addToWindow(windowKey, newestBucket, tokens, requests, windowMs)
  local slot = slotOf(newestBucket)
  if tokens ~= 0 then
    redis.call('HINCRBY', windowKey, TOKEN_SLOTS[slot], tokens)
    redis.call('HINCRBY', windowKey, 't', tokens)
  end
  if requests ~= 0 then
    redis.call('HINCRBY', windowKey, REQUEST_SLOTS[slot], requests)
    redis.call('HINCRBY', windowKey, 'r', requests)
    redis.call('HINCRBY', windowKey, 's', requests)
  end
  redis.call('HSET', windowKey, 'h', newestBucket)
  -- Everything booked leaves the window after one window; two leave room for late reconciliation.
  redis.call('PEXPIRE', windowKey, 2 * windowMs)
end

-- Adds whole tokens (>= 0) spread evenly over the window's 60 buckets, the remainder one each to the
-- oldest: usage a deployment reported that we had not booked happened over its past window as far as
-- we know, so it leaves as Azure's window slides, a share each bucket, not all at once a window later
-- (which made one 429 with "remaining 0, retry after 1 s" close the deployment for a minute).
local function spreadOverWindow(windowKey, newestBucket, tokens, windowMs)
  if tokens <= 0 then return end
  local share = math.floor(tokens / WINDOW_BUCKETS)
  local extra = tokens - share * WINDOW_BUCKETS
  local oldest = newestBucket - WINDOW_BUCKETS + 1
  for i = 0, WINDOW_BUCKETS - 1 do
    local amount = share
    if i < extra then amount = amount + 1 end
    if amount > 0 then redis.call('HINCRBY', windowKey, TOKEN_SLOTS[slotOf(oldest + i)], amount) end
  end
  redis.call('HINCRBY', windowKey, 't', tokens)
  redis.call('HSET', windowKey, 'h', newestBucket)
  redis.call('PEXPIRE', windowKey, 2 * windowMs)
end

-- Books one request of `tokens` into the newest bucket (the window must be advanced to it).
local function bookWindow(windowKey, newestBucket, tokens, windowMs)
  addToWindow(windowKey, newestBucket, tokens, 1, windowMs)
end

-- Milliseconds from nowMs until the window admits the request if nothing else is booked meanwhile:
-- 0 when it fits now, -1 when it never can (estimate above tpm, or rpm below 1). Takes the totals
-- advanceWindow returned; shortRequests nil for no short window (client quotas); shortLimit as fitsBudget's.
local function windowWaitMs(windowKey, newestBucket, nowMs, bucketMs, tokens, tpm, rpm, windowTokens, windowRequests, shortRequests,
                            shortLimit)
  if tpm and tokens > tpm then return -1 end
  if rpm and rpm < 1 then return -1 end
  local tokenSlots = redis.call('HMGET', windowKey, unpack(TOKEN_SLOTS))
  local requestSlots = redis.call('HMGET', windowKey, unpack(REQUEST_SLOTS))
  -- Walk forward bucket by bucket: at the start of bucket f, bucket f-60 has left the window and
  -- bucket f-10 the short window. By f = newest + 60 the window is empty, so the loop is bounded.
  for future = newestBucket, newestBucket + WINDOW_BUCKETS do
    if future > newestBucket then
      local leavingSlot = slotOf(future - WINDOW_BUCKETS)
      windowTokens = windowTokens - (tonumber(tokenSlots[leavingSlot]) or 0)
      windowRequests = windowRequests - (tonumber(requestSlots[leavingSlot]) or 0)
      local leavingShort = future - SHORT_WINDOW_BUCKETS
      if shortRequests and leavingShort <= newestBucket then
        shortRequests = shortRequests - (tonumber(requestSlots[slotOf(leavingShort)]) or 0)
      end
    end
    if fitsBudget(tokens, tpm, rpm, windowTokens, windowRequests, shortRequests, shortLimit) then
      return math.max(0, future * bucketMs - nowMs)
    end
  end
  return -1
end

-- Takes one request out of a bucket still inside the window (advanced to newestBucket) and out of the
-- totals: the window's, and the short window's when the bucket is in it. Never below zero.
local function withdrawRequest(windowKey, newestBucket, bucket, windowMs)
  if bucket > newestBucket or bucket <= newestBucket - WINDOW_BUCKETS then return end
  local requestSlot = REQUEST_SLOTS[slotOf(bucket)]
  local values = redis.call('HMGET', windowKey, requestSlot, 'r', 's')
  if (tonumber(values[1]) or 0) < 1 then return end
  local inShort = bucket > newestBucket - SHORT_WINDOW_BUCKETS
  redis.call('HINCRBY', windowKey, requestSlot, -1)
  redis.call('HSET', windowKey, 'r', math.max(0, (tonumber(values[2]) or 0) - 1))
  if inShort then redis.call('HSET', windowKey, 's', math.max(0, (tonumber(values[3]) or 0) - 1)) end
  redis.call('PEXPIRE', windowKey, 2 * windowMs)
end

-- Replaces part of a booking with the real cost: adds delta to the bucket and the total while the
-- bucket is still inside the window (advanced to newestBucket), never letting either go below zero.
local function adjustWindow(windowKey, newestBucket, bucket, delta, windowMs)
  if delta == 0 or bucket > newestBucket or bucket <= newestBucket - WINDOW_BUCKETS then return end
  local tokenSlot = TOKEN_SLOTS[slotOf(bucket)]
  local values = redis.call('HMGET', windowKey, 'h', tokenSlot, 't')
  if not values[1] then return end
  local inBucket = tonumber(values[2]) or 0
  local adjusted = math.max(0, inBucket + delta)
  local total = math.max(0, (tonumber(values[3]) or 0) + adjusted - inBucket)
  redis.call('HSET', windowKey, tokenSlot, adjusted, 't', total)
  redis.call('PEXPIRE', windowKey, 2 * windowMs)
end
