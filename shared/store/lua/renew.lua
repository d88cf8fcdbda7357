--[[
  Push the deadline of live leases of one pool. Dead leases (deadline passed, reaped or not) are not
  revived. A renewed half-open probe keeps its probe marker for as long as the lease.

  KEYS[2j - 1]  lease j: its deployment's leases ZSET     (j = 1 .. m)
  KEYS[2j]      lease j: its deployment's state hash

  ARGV[1]       lease time from now (ms)
  ARGV[1 + j]   lease j: lease id

  Output: how many leases were renewed.
]]
--- @include "includes/time.lua"
--- @include "includes/leases.lua"
--- @include "includes/state.lua"

local nowMs = redisNowMs()
local deadline = nowMs + tonumber(ARGV[1])
local renewed = 0
for j = 1, #KEYS / 2 do
  local leasesKey, stateKey, leaseId = KEYS[2 * j - 1], KEYS[2 * j], ARGV[1 + j]
  reapLeases(leasesKey, nowMs)
  local current = tonumber(redis.call('ZSCORE', leasesKey, leaseId))
  if current then
    renewed = renewed + 1
    -- Renewing pushes a deadline out, never pulls it in.
    if current < deadline then
      redis.call('ZADD', leasesKey, 'XX', deadline, leaseId)
      keepKeyUntil(leasesKey, deadline, nowMs)
    end
    local _, _, probeLease, probeDeadline = readState(stateKey)
    if probeLease == leaseId and probeDeadline < deadline then
      redis.call('HSET', stateKey, 'pd', deadline)
      expireStateWhenIdle(stateKey, nowMs)
    end
  end
end
return renewed
