--[[
  Choose a deployment of one pool by the pool's strategy and lease it, in one atomic step.

  Reaps the dead leases of deployments that may hold one, drops eligibility for deployments that are
  excluded, drained, cooling down, open, half-open with a probe in flight, or short of budget; takes
  the best priority tier with an eligible deployment and picks inside it. The pick gets a lease and a reservation in its
  window. A drained deployment (taken out by hand, state hash field dr) counts as excluded: it has no
  retry time of its own, so it neither shortens nor lengthens the refusal's, and a pool drained
  entirely is never servable (reason 1, a window; a ticket leaves the queue).

  With a queue ticket (first-come-first-served waiting): tickets whose deadline passed leave the pool's
  wait queue first. While another ticket is ahead of this one nothing is granted (reason 3, queued): the
  ticket joins the tail unless it is in already (it keeps its place) and its deadline is refreshed. At
  the head, or with the queue empty, the normal choice runs: a grant takes the ticket out of the queue, a
  refusal puts it in / keeps it with its deadline refreshed. A request that no deployment could ever take
  (estimate above every tpm, all excluded) is never queued: normal refusal, and its ticket leaves.
  Without a ticket the queue is neither read nor written.

  Background work (ARGV[13], 1 - its reserve): admitted last. Each budget is cut to floor((1 - reserve) x
  limit), the short window's to floor((1 - reserve) x ceil(rpm / 6)), and a deployment is eligible only
  while this booking stays within them (a limit cut to 0 admits nothing); refusals say when the cut
  budget would fit. A half-open deployment counts as excluded (background work is never a probe). While
  any live ticket waits in the queue nothing is granted (reason 3, a poll hint); the queue is only read.

  Slow start (ARGV[11]): a candidate of the chosen tier whose slow start began at ss (state hash) with
  ss <= now < ss + slowStartMs stays a candidate with probability 0.1 + 0.9 (now - ss) / slowStartMs,
  drawn per candidate from ARGV[12] (math.random is seeded with it: the script's own seed is fixed),
  as long as another candidate of the tier is not slow-starting; otherwise all stay.

  KEYS[1]          round-robin cursor of the pool
  KEYS[2]          wait queue order ZSET: ticket -> enqueue time (us)   (includes/queue.lua)
  KEYS[3]          wait queue deadlines ZSET: ticket -> deadline (epoch ms)
  KEYS[4]          the pool's in-flight hash: live lease counts (includes/leases.lua)
  KEYS[5]          the pool's state index hash: which state hashes exist (includes/state.lua)
  KEYS[3i + 3]     deployment i: state hash            (i = 1 .. n, in config order)
  KEYS[3i + 4]     deployment i: leases ZSET
  KEYS[3i + 5]     deployment i: usage window hash

  What it reads does not grow by a command per deployment: lease counts come from the in-flight hash
  (one HGETALL; only a deployment that may hold a dead lease is reaped), state hashes are read only
  where the state index has an entry (one HGETALL), and for least-requests, random and weighted the
  usage window only of the deployment picked (the lazy choice below); round-robin, power-of-two, a
  running slow start, a ticket behind another and a refusal read every window, as they need them.

  ARGV[1]          lease id
  ARGV[2]          lease time (ms)
  ARGV[3]          estimated tokens (whole number >= 0)
  ARGV[4]          window length (ms, multiple of 60)
  ARGV[5]          strategy: least-requests | round-robin | random | power-of-two | weighted
  ARGV[6], ARGV[7] random numbers in [0, 1) from the caller (script math.random is deterministic)
  ARGV[8]          queue ticket ('' = ignore the queue)
  ARGV[9]          the ticket's time to live from now (ms), when queued
  ARGV[10]         the caller's deadline (epoch ms, Redis clock; '' = none): the moment its client gives
                   up on this call. Past it the script changes nothing at all (no lease, no reservation,
                   no queue place, no cursor step) and answers reason 4: nobody waits for the lease.
  ARGV[11]         slow start length (ms, at most SLOW_START_MEMORY_MS; 0 = off)
  ARGV[12]         seed of the slow-start draws (a whole number in [0, 2^31) from the caller)
  ARGV[13]         background work's share of the budgets: 1 - its reserve, in [0.05, 1] ('' = an interactive
                   request); computed by the caller, so both stores floor the very same products
  ARGV[14 + 5(i - 1) ..] deployment i: priority, weight, tpm ('' = none), rpm ('' = none), excluded (1/0)

  Output:
    { 1, i, bucket, probe }         granted deployment i; bucket booked into; probe 1 when half-open probe
    { 0, reason, retryAfterMs }     reason 1 = unavailable, 2 = no-budget, 3 = queued (another ticket ahead;
                                    retryAfterMs: when this request could fit, or the next bucket edge when
                                    it fits now, since that room is the head's)
    { 0, 4, 0 }                     late: came in past the caller's deadline, nothing done
]]
--- @include "includes/time.lua"
--- @include "includes/leases.lua"
--- @include "includes/state.lua"
--- @include "includes/window.lua"
--- @include "includes/queue.lua"

local nowUs = redisNowUs()
local nowMs = math.floor(nowUs / 1000)
-- Before anything is read or written: a late call must leave no trace (not even a queue refresh).
if pastDeadline(ARGV[10], nowMs) then return { 0, 4, 0 } end
local leaseId = ARGV[1]
local leaseMs = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local windowMs = tonumber(ARGV[4])
local strategy = ARGV[5]
local random1 = tonumber(ARGV[6])
local random2 = tonumber(ARGV[7])
local bucketMs = windowMs / WINDOW_BUCKETS
local nowBucket = math.floor(nowMs / bucketMs)
local queueKey, deadlinesKey = KEYS[2], KEYS[3]
local ticket = ARGV[8]
local hasTicket = ticket ~= ''
local ticketDeadline = nowMs + (tonumber(ARGV[9]) or 0)
local slowStartMs = tonumber(ARGV[11]) or 0
local backgroundShare = tonumber(ARGV[13])
local background = backgroundShare ~= nil
local deploymentCount = (#KEYS - 5) / 3
local inflightKey, stateIndexKey = KEYS[4], KEYS[5]
local declaredLeases = {}
for i = 1, deploymentCount do declaredLeases[KEYS[3 * i + 4]] = true end
local leaseCounts, leaseNexts = liveLeaseCounts(inflightKey, declaredLeases, nowMs)
local stateIndex = readStateIndex(stateIndexKey)

-- Another live ticket is ahead of this one: nothing is granted to it now. Background work comes after
-- every live ticket (it reads the queue and never joins it).
local behind = false
if hasTicket then
  reapQueue(queueKey, deadlinesKey, nowMs)
  local head = queueHead(queueKey)
  behind = head ~= nil and head ~= ticket
elseif background then
  behind = redis.call('ZCOUNT', deadlinesKey, '(' .. nowMs, '+inf') > 0
end

-- floor(share x limit), nudged as reducedLimit in shared/store/background.ts (same doubles).
local function reducedLimit(limit)
  return math.floor(backgroundShare * limit * (1 + 1e-9))
end

-- Everything acquire knows about deployment i (its state, its window when budgeted, whether it can take
-- this request now), read once per call on first use.
local deployments = {}
local function evaluate(i)
  if deployments[i] then return deployments[i] end
  local arg = 14 + 5 * (i - 1)
  local d = {
    index = i,
    stateKey = KEYS[3 * i + 3],
    leasesKey = KEYS[3 * i + 4],
    windowKey = KEYS[3 * i + 5],
    priority = tonumber(ARGV[arg]),
    weight = tonumber(ARGV[arg + 1]) or 0,
    tpm = tonumber(ARGV[arg + 2]),
    rpm = tonumber(ARGV[arg + 3]),
    excluded = ARGV[arg + 4] == '1',
    blockedUntil = 0,
    halfOpen = false,
    eligible = false,
    slowStartSince = 0,
    -- Background work also sets shortLimit (its cut short-window limit; nil: ceil(rpm / 6)) and neverFits.
  }
  d.inFlight = leaseCounts[d.leasesKey] or 0
  local cooldownUntil, openUntil, probeDeadline, drained = 0, 0, 0, false
  if not d.excluded and hasState(stateIndex, d.stateKey, nowMs) then
    local _
    cooldownUntil, openUntil, _, probeDeadline, drained, _, d.slowStartSince = readState(d.stateKey)
    -- Out of rotation by hand: as if excluded (no retry time of its own, no probe).
    if drained then d.excluded = true end
  end
  if not d.excluded then
    if cooldownUntil > nowMs then d.blockedUntil = cooldownUntil end
    if openUntil > nowMs then
      d.blockedUntil = math.max(d.blockedUntil, openUntil)
    elseif openUntil > 0 then
      d.halfOpen = true
      if probeDeadline > nowMs then d.blockedUntil = math.max(d.blockedUntil, probeDeadline) end
    end
    -- Background work is never the probe: a half-open deployment is out for it, with no retry time of its own.
    if background and d.halfOpen then d.excluded = true end
  end
  if not d.excluded then
    if background then
      if d.rpm then d.shortLimit = reducedLimit(math.ceil(d.rpm / 6)) end
      if d.tpm then d.tpm = reducedLimit(d.tpm) end
      if d.rpm then d.rpm = reducedLimit(d.rpm) end
      d.neverFits = (d.tpm ~= nil and d.tpm < 1) or (d.rpm ~= nil and (d.rpm < 1 or d.shortLimit < 1))
    end
    -- A deployment without budgets needs its window only if chosen (to book usage for snapshots).
    d.budgeted = d.tpm ~= nil or d.rpm ~= nil
    if d.budgeted then
      d.newestBucket, d.windowTokens, d.windowRequests, d.shortRequests = advanceWindow(d.windowKey, nowBucket)
    end
    d.eligible = d.blockedUntil == 0 and not d.neverFits
      and (not d.budgeted or fitsBudget(tokens, d.tpm, d.rpm, d.windowTokens, d.windowRequests, d.shortRequests, d.shortLimit))
  end
  deployments[i] = d
  return d
end

-- 1-based index in [1, n] from a random number in [0, 1).
local function randomIndex(n, random)
  return math.min(n, math.floor(random * n) + 1)
end

-- Whether a deployment's slow start is running now (its share of the tier is cut).
local function slowStarting(d)
  local elapsed = nowMs - d.slowStartSince
  return slowStartMs > 0 and d.slowStartSince > 0 and elapsed >= 0 and elapsed < slowStartMs
end

--[[
  The lazy choice, for least-requests, random and weighted when nothing waits ahead and no deployment
  that could take the request is slow-starting: pick by the strategy among the deployments not yet
  ruled out of the best tier (from what costs nothing to know: its priority, weight and lease count),
  and only then read the pick's window; a pick that cannot take the request is ruled out and the pick
  made again. Picking again among the rest, at random where the strategy draws, chooses exactly as
  picking among the eligible ones would, but reads one window in the common case instead of all of
  them. Deployments with state (cooldown, circuit, drain, slow start) are evaluated fully on the way.
  One pass over the deployments finds the tier and the strategy's candidates in it (this loop is most of
  an acquire's cost at 100 deployments). After LAZY_PICKS picks that could not take it, and in a pool
  where nothing fits, the full evaluation below takes over: it reads every window once, instead of once
  more per pass, and says when something will fit.
]]
local LAZY_PICKS = 3
local chosen = nil
local lazy = not behind and (strategy == 'least-requests' or strategy == 'random' or strategy == 'weighted')
local leastRequests, weighted = strategy == 'least-requests', strategy == 'weighted'
local ruledOut = {}
-- Most pools have no state at all: then no deployment's is looked up.
local anyState = next(stateIndex) ~= nil

-- The strategy's pick among the deployments of the best tier not ruled out (nil: none, or the lazy
-- choice no longer applies). Rules out on the way what its state says cannot take the request.
local function lazyPick(random)
  local best, fewest, tier, tierWeight = nil, nil, {}, 0
  for i = 1, deploymentCount do
    local arg = 9 + 5 * i
    if not ruledOut[i] and ARGV[arg + 4] ~= '1' then
      local possible = true
      if anyState and hasState(stateIndex, KEYS[3 * i + 3], nowMs) then
        local d = evaluate(i)
        possible = d.eligible
        -- The slow-start filter depends on the whole tier: the full evaluation handles it.
        if possible and slowStarting(d) then
          lazy = false
          return nil
        end
      end
      if possible then
        local priority = tonumber(ARGV[arg])
        if best == nil or priority < best then
          best, fewest, tier, tierWeight = priority, nil, {}, 0
        end
        if priority == best then
          if leastRequests then
            local inFlight = leaseCounts[KEYS[3 * i + 4]] or 0
            if fewest == nil or inFlight < fewest then
              fewest = inFlight
              tier = { i }
            elseif inFlight == fewest then
              tier[#tier + 1] = i
            end
          else
            tier[#tier + 1] = i
            if weighted then tierWeight = tierWeight + math.max(0, tonumber(ARGV[arg + 1]) or 0) end
          end
        end
      else
        ruledOut[i] = true
      end
    end
  end
  if #tier == 0 then return nil end
  if weighted and tierWeight > 0 then
    local point = random * tierWeight
    local pick = nil
    for _, i in ipairs(tier) do
      local weight = tonumber(ARGV[10 + 5 * i]) or 0
      if weight > 0 then
        pick = i
        point = point - weight
        if point < 0 then break end
      end
    end
    return pick
  end
  return tier[randomIndex(#tier, random)]
end

if lazy then
  local random = random1
  local seeded = false
  for _ = 1, LAZY_PICKS do
    local pick = lazyPick(random)
    if pick == nil then break end
    local d = evaluate(pick)
    if d.eligible then
      chosen = d
      break
    end
    ruledOut[pick] = true
    -- Later draws come from the caller's seed (the slow-start seed: no slow start runs on this path);
    -- the full evaluation's draw too, since random1 told only which deployment could not take it.
    if not seeded then
      math.randomseed(tonumber(ARGV[12]) or 0)
      seeded = true
    end
    random = math.random()
    random1 = random
  end
end

-- The soonest moment (epoch ms) any deployment not excluded could take the request if nothing else were
-- booked meanwhile (nowMs when one can now; nil when none ever can), and why none can now when none can:
-- 1 unavailable (all blocked), 2 no-budget (some lacks only budget).
local function soonestRoom()
  local reason = 1
  local soonest = nil
  for _, d in ipairs(deployments) do
    if not d.excluded then
      if d.blockedUntil == 0 then reason = 2 end
      local wait = 0
      if d.neverFits then
        wait = -1
      elseif d.budgeted then
        wait = windowWaitMs(d.windowKey, d.newestBucket, nowMs, bucketMs, tokens, d.tpm, d.rpm,
          d.windowTokens, d.windowRequests, d.shortRequests, d.shortLimit)
      end
      if wait >= 0 then
        local at = math.max(d.blockedUntil, nowMs + wait)
        if soonest == nil or at < soonest then soonest = at end
      end
    end
  end
  return reason, soonest
end

local function choose(candidates)
  local n = #candidates
  if strategy == 'round-robin' then
    -- One cursor per pool for every instance, so N instances together still rotate in order.
    local cursor = redis.call('INCR', KEYS[1])
    redis.call('PEXPIRE', KEYS[1], 2 * windowMs)
    return candidates[(cursor - 1) % n + 1]
  elseif strategy == 'random' then
    return candidates[randomIndex(n, random1)]
  elseif strategy == 'power-of-two' then
    if n == 1 then return candidates[1] end
    local first = randomIndex(n, random1)
    local second = randomIndex(n - 1, random2)
    if second >= first then second = second + 1 end
    if candidates[second].inFlight < candidates[first].inFlight then return candidates[second] end
    return candidates[first]
  elseif strategy == 'weighted' then
    local total = 0
    for _, d in ipairs(candidates) do total = total + math.max(0, d.weight) end
    if total <= 0 then return candidates[randomIndex(n, random1)] end
    local point = random1 * total
    local last = nil
    for _, d in ipairs(candidates) do
      if d.weight > 0 then
        last = d
        point = point - d.weight
        if point < 0 then return d end
      end
    end
    return last
  end
  -- least-requests: fewest live leases, ties broken at random.
  local fewest = nil
  local tied = {}
  for _, d in ipairs(candidates) do
    if fewest == nil or d.inFlight < fewest then
      fewest = d.inFlight
      tied = { d }
    elseif d.inFlight == fewest then
      tied[#tied + 1] = d
    end
  end
  return tied[randomIndex(#tied, random1)]
end

-- The full evaluation: every deployment's state and window read. Returns the choice, or nil and the
-- refusal to answer (nothing is granted now: the soonest moment any deployment could take it).
local function fullChoice()
  for i = 1, deploymentCount do evaluate(i) end
  local bestPriority = nil
  for _, d in ipairs(deployments) do
    if d.eligible and (bestPriority == nil or d.priority < bestPriority) then bestPriority = d.priority end
  end
  if behind or bestPriority == nil then
    local reason, soonest = soonestRoom()
    if soonest == nil then
      -- Never servable: waiting would only block the others.
      if hasTicket then leaveQueue(queueKey, deadlinesKey, ticket) end
      return nil, { 0, reason, windowMs }
    end
    if hasTicket then waitInQueue(queueKey, deadlinesKey, ticket, nowUs, ticketDeadline, nowMs) end
    local wait = soonest - nowMs
    if behind then
      -- Room now is the head's; more frees at a bucket edge at the earliest (or when a charge comes in lower).
      reason = 3
      if wait <= 0 then wait = (nowBucket + 1) * bucketMs - nowMs end
    end
    return nil, { 0, reason, math.max(1, math.ceil(wait)) }
  end

  local candidates = {}
  for _, d in ipairs(deployments) do
    if d.eligible and d.priority == bestPriority then candidates[#candidates + 1] = d end
  end

  -- Slow start: while another candidate is not slow-starting, each one that is stays only with its share.
  if slowStartMs > 0 and #candidates > 1 then
    local steady = false
    for _, d in ipairs(candidates) do
      local elapsed = nowMs - d.slowStartSince
      if d.slowStartSince > 0 and elapsed >= 0 and elapsed < slowStartMs then
        -- 0.1: SLOW_START_INITIAL_SHARE in shared/store/slow-start.ts.
        d.share = 0.1 + 0.9 * elapsed / slowStartMs
      else
        steady = true
      end
    end
    if steady then
      math.randomseed(tonumber(ARGV[12]) or 0)
      local kept = {}
      for _, d in ipairs(candidates) do
        if d.share == nil or math.random() < d.share then kept[#kept + 1] = d end
      end
      candidates = kept
    end
  end
  return choose(candidates)
end

if chosen == nil then
  local refusal
  chosen, refusal = fullChoice()
  if refusal then return refusal end
end
if hasTicket then leaveQueue(queueKey, deadlinesKey, ticket) end
if not chosen.budgeted then chosen.newestBucket = advanceWindow(chosen.windowKey, nowBucket) end
local deadline = nowMs + leaseMs
addLease(chosen.leasesKey, inflightKey, leaseId, deadline, leaseCounts[chosen.leasesKey], leaseNexts[chosen.leasesKey], nowMs)
bookWindow(chosen.windowKey, chosen.newestBucket, tokens, windowMs)
local probe = 0
if chosen.halfOpen then
  -- The single cluster-wide probe: the marker expires with the lease if its holder dies.
  redis.call('HSET', chosen.stateKey, 'pl', leaseId, 'pd', deadline)
  expireStateWhenIdle(chosen.stateKey, stateIndexKey, nowMs)
  probe = 1
end
return { 1, chosen.index, chosen.newestBucket, probe }
