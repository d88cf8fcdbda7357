--[[
  Push the deadline of live leases of one pool, grouped by deployment: per deployment one reap of its
  dead leases and one ZADD XX GT of all its leases, so the cost is a few commands per deployment plus
  a small one per lease. Dead leases (deadline passed, reaped or not) are not revived: the reap runs
  first and XX only touches members still there; GT pushes a deadline out, never pulls it in. The
  caller sends a bounded number of leases per call (RENEW_BATCH in shared/store/constants.ts), so one
  call never holds Redis long whatever is in flight. Only probe leases (Lease.probe) look at the state
  hash: a renewed half-open probe keeps its probe marker for as long as the lease. A call that comes
  in past the caller's deadline renews nothing: its client gave up on it and renews again on its next
  round if the lease is still held, whereas a late renewal would keep a lease alive from this later
  moment on even when its holder ended or died in between.

  KEYS[1]       the pool's in-flight hash (includes/leases.lua)
  KEYS[2]       the pool's state index hash (includes/state.lua)
  KEYS[2g + 1]  deployment g: its leases ZSET     (g = 1 .. groups)
  KEYS[2g + 2]  deployment g: its state hash

  ARGV[1]       lease time from now (ms)
  ARGV[2]       the caller's deadline (epoch ms, Redis clock; '' = none)
  then per deployment g, in order: n (its leases), p (how many of them are probes), its n lease ids,
                the p probe leases first

  Output: how many deadlines moved; -1 when late (past the caller's deadline, nothing renewed).
]]
--- @include "includes/time.lua"
--- @include "includes/leases.lua"
--- @include "includes/state.lua"

local nowMs = redisNowMs()
if pastDeadline(ARGV[2], nowMs) then return -1 end
local deadline = nowMs + tonumber(ARGV[1])
-- One string for every member's score: Redis converts a Lua number argument anew on each use.
local deadlineArg = tostring(deadline)
local inflightKey, stateIndexKey = KEYS[1], KEYS[2]
local moved = 0
local arg = 3
for g = 1, (#KEYS - 2) / 2 do
  local leasesKey, stateKey = KEYS[2 * g + 1], KEYS[2 * g + 2]
  local n, probes = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
  local first = arg + 2
  arg = first + n
  -- Dead leases first (XX then leaves them out): one reap per deployment, not per lease.
  redis.call('ZREMRANGEBYSCORE', leasesKey, '-inf', nowMs)
  local members = {}
  for i = first, first + n - 1 do
    members[#members + 1] = deadlineArg
    members[#members + 1] = ARGV[i]
  end
  moved = moved + redis.call('ZADD', leasesKey, 'XX', 'GT', 'CH', unpack(members))
  if recountLeases(leasesKey, inflightKey) > 0 then keepKeyUntil(leasesKey, deadline, nowMs) end
  for i = first, first + probes - 1 do
    local leaseId = ARGV[i]
    local _, _, probeLease, probeDeadline = readState(stateKey)
    if probeLease == leaseId and probeDeadline < deadline and redis.call('ZSCORE', leasesKey, leaseId) then
      redis.call('HSET', stateKey, 'pd', deadline)
      expireStateWhenIdle(stateKey, stateIndexKey, nowMs)
    end
  end
end
if redis.call('EXISTS', inflightKey) == 1 then keepKeyUntil(inflightKey, deadline, nowMs) end
return moved
