--[[
  Live leases of one deployment: ZSET leaseId -> deadline (epoch ms). A lease whose deadline has
  come is dead; reaping removes it, so an instance that died stops counting within one lease time.
]]
local function reapLeases(leasesKey, nowMs)
  redis.call('ZREMRANGEBYSCORE', leasesKey, '-inf', nowMs)
  return redis.call('ZCARD', leasesKey)
end

-- The key outlives its latest deadline only as a garbage backstop; reaping is what keeps counts right.
local function keepLeasesUntil(leasesKey, deadline, nowMs)
  local needed = deadline - nowMs
  if needed > 0 and redis.call('PTTL', leasesKey) < needed then
    redis.call('PEXPIRE', leasesKey, needed)
  end
end
