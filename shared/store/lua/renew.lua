--[[
  Push the deadline of live leases of one pool. Dead leases (deadline passed, reaped or not) are not
  revived. A renewed half-open probe keeps its probe marker for as long as the lease. A call that comes
  in past the caller's deadline renews nothing: its client gave up on it and renews again on its next
  round if the lease is still held, whereas a late renewal would keep a lease alive from this later
  moment on even when its holder ended or died in between.

  KEYS[2j - 1]  lease j: its deployment's leases ZSET     (j = 1 .. m)
  KEYS[2j]      lease j: its deployment's state hash

  ARGV[1]       lease time from now (ms)
  ARGV[2]       the caller's deadline (epoch ms, Redis clock; '' = none)
  ARGV[2 + j]   lease j: lease id

  Output: how many leases were renewed; -1 when late (past the caller's deadline, nothing renewed).
]]
--- @include "includes/time.lua"
--- @include "includes/leases.lua"
--- @include "includes/state.lua"

local nowMs = redisNowMs()
if pastDeadline(ARGV[2], nowMs) then return -1 end
local deadline = nowMs + tonumber(ARGV[1])
local renewed = 0
for j = 1, #KEYS / 2 do
  local leasesKey, stateKey, leaseId = KEYS[2 * j - 1], KEYS[2 * j], ARGV[2 + j]
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
