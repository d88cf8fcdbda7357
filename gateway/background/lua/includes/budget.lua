--[[
  The byte budget of the Batch API's store: one counter (the bytes held), each holder's size (a file,
  an output or error file's results, an upload's reservation) and each holder's expiry, so that the
  bytes of what expired leave the counter (reapExpired) and nothing is counted twice.
]]

-- Changes a holder's size by `delta` (it is registered with size 0 when unknown), and the counter with it.
local function addBytes(bytesKey, sizesKey, member, delta)
  if delta == 0 then return end
  redis.call('HINCRBY', sizesKey, member, delta)
  redis.call('INCRBY', bytesKey, delta)
end

-- Forgets a holder: its bytes leave the counter (never below 0).
local function dropHolder(bytesKey, sizesKey, expiryKey, member)
  local size = tonumber(redis.call('HGET', sizesKey, member)) or 0
  if size ~= 0 then
    local left = redis.call('DECRBY', bytesKey, size)
    if left < 0 then redis.call('SET', bytesKey, 0) end
  end
  redis.call('HDEL', sizesKey, member)
  redis.call('ZREM', expiryKey, member)
end

-- Forgets up to `limit` holders whose expiry passed (their keys expired on their own, by their TTLs).
local function reapExpired(bytesKey, sizesKey, expiryKey, nowMs, limit)
  local expired = redis.call('ZRANGEBYSCORE', expiryKey, '-inf', nowMs, 'LIMIT', 0, limit)
  for _, member in ipairs(expired) do dropHolder(bytesKey, sizesKey, expiryKey, member) end
  return #expired
end
