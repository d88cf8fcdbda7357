--[[
  Live leases of one deployment: ZSET leaseId -> deadline (epoch ms). A lease whose deadline has
  come is dead; reaping removes it, so an instance that died stops counting within one lease time.
  The key outlives its latest deadline (keepKeyUntil) only as a garbage backstop; reaping is what
  keeps counts right. Include time.lua first.
]]
local function reapLeases(leasesKey, nowMs)
  redis.call('ZREMRANGEBYSCORE', leasesKey, '-inf', nowMs)
  return redis.call('ZCARD', leasesKey)
end

