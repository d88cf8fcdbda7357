-- Keeps a key alive until at least `atMs` (epoch ms): its expiry is raised, never lowered, and a key
-- without one gets it (PEXPIREAT GT treats "no expiry" as infinite and so would never set it).
local function keepUntil(key, atMs, nowMs)
  local needed = atMs - nowMs
  if needed <= 0 then return end
  local ttl = redis.call('PTTL', key)
  if ttl == -1 or ttl < needed then redis.call('PEXPIREAT', key, atMs) end
end
