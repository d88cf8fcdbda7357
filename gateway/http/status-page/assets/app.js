// Spillway's status page: polls GET /admin/pools every second and draws each pool's deployments
// (utilisation against budget, in flight, drained / cooldown / circuit with time left), with drain,
// enable and reset buttons. Plain DOM, no framework, no build step. URLs are relative to /admin/.
/* global document, fetch, URLSearchParams, AbortSignal, performance, setTimeout, clearTimeout */

const POLL_MS = 1000;
/** Sent on every call: the gateway requires it on state-changing calls made with the session cookie (CSRF). */
const HEADERS = { 'x-spillway-admin': '1' };

const byId = (id) => document.getElementById(id);
const ui = {
  form: byId('sign-in'),
  key: byId('key'),
  error: byId('sign-in-error'),
  pools: byId('pools'),
  notice: byId('notice'),
  live: byId('live'),
  signOut: byId('sign-out'),
};
const numbers = new Intl.NumberFormat();

/** 'unknown' until the first answer, then 'signed-out' or 'signed-in'. */
let mode = 'unknown';
/** The latest /admin/pools answer, and when (performance.now()) it arrived: the server's clock is data.now then. */
let data;
let fetchedAt = 0;
let timer;
let polling = false;
let pollAgain = false;
/** Set by a successful sign-in: a 401 right after it means the browser did not keep the cookie. */
let justSignedIn = false;
let noticeTimer;

/** pool name → { section, summary, grid, cards: Map(id → card) } */
const sections = new Map();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body?.error?.message ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// ---- polling -------------------------------------------------------------------------------------

function schedule() {
  clearTimeout(timer);
  timer = undefined;
  if (mode === 'signed-in' && document.visibilityState !== 'hidden') timer = setTimeout(poll, POLL_MS);
}

/** One poll at a time; a poll asked for while one runs follows it. */
async function poll() {
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  clearTimeout(timer);
  try {
    await pollOnce();
  } finally {
    polling = false;
  }
  if (pollAgain) {
    pollAgain = false;
    await poll();
  }
}

async function pollOnce() {
  let response;
  try {
    response = await fetch('pools', { headers: HEADERS, cache: 'no-store', signal: AbortSignal.timeout(5000) });
  } catch {
    return failed('the gateway did not answer');
  }
  if (response.status === 401) {
    const lost = justSignedIn;
    justSignedIn = false;
    showSignIn(lost ? 'Signed in, but the browser did not keep the session cookie.' : undefined);
    return;
  }
  if (!response.ok) return failed(await errorMessage(response));
  try {
    data = await response.json();
  } catch {
    return failed('the answer could not be read');
  }
  fetchedAt = performance.now();
  justSignedIn = false;
  ui.live.textContent = `Live · updated ${new Date().toLocaleTimeString()}`;
  ui.live.className = 'live ok';
  showPools();
  render();
  schedule();
}

function failed(reason) {
  ui.live.textContent = `Not updating: ${reason}; retrying`;
  ui.live.className = 'live stale';
  if (mode === 'unknown') notify(`The gateway's admin API is not answering: ${reason}.`, true);
  if (mode === 'signed-out') return;
  // Not known yet whether this browser is signed in: keep asking, as when signed in.
  mode = 'signed-in';
  render();
  schedule();
}

document.addEventListener('visibilitychange', () => {
  if (mode !== 'signed-in') return;
  if (document.visibilityState === 'hidden') clearTimeout(timer);
  else poll();
});

// ---- signing in and out --------------------------------------------------------------------------

function showSignIn(error) {
  mode = 'signed-out';
  clearTimeout(timer);
  data = undefined;
  sections.clear();
  ui.pools.replaceChildren();
  ui.pools.hidden = true;
  ui.signOut.hidden = true;
  ui.live.textContent = '';
  ui.live.className = 'live';
  ui.form.hidden = false;
  showFormError(error);
  ui.key.focus();
}

function showPools() {
  mode = 'signed-in';
  ui.form.hidden = true;
  ui.error.hidden = true;
  ui.pools.hidden = false;
  ui.signOut.hidden = false;
}

function showFormError(message) {
  ui.error.textContent = message ?? '';
  ui.error.hidden = !message;
}

ui.form.addEventListener('submit', async (event) => {
  event.preventDefault();
  showFormError(undefined);
  const button = ui.form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const response = await fetch('login', {
      method: 'POST',
      headers: { ...HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ key: ui.key.value }),
      signal: AbortSignal.timeout(10_000),
    });
    if (response.ok) {
      ui.key.value = '';
      justSignedIn = true;
      await poll();
    } else if (response.status === 401) {
      showFormError('That is not the admin key.');
      ui.key.select();
    } else {
      showFormError(`Sign-in failed: ${await errorMessage(response)}`);
    }
  } catch {
    showFormError('Sign-in failed: the gateway did not answer.');
  } finally {
    button.disabled = false;
  }
});

ui.signOut.addEventListener('click', async () => {
  try {
    await fetch('logout', { method: 'POST', headers: HEADERS, signal: AbortSignal.timeout(10_000) });
  } catch {
    // The cookie expires by itself; the form is shown either way.
  }
  showSignIn();
});

// ---- actions -------------------------------------------------------------------------------------

const DONE = { drain: 'drained', enable: 'enabled', reset: 'reset' };

async function act(pool, id, action, button) {
  button.disabled = true;
  try {
    const response = await fetch(`pools/${encodeURIComponent(pool)}/deployments/${encodeURIComponent(id)}/${action}`, {
      method: 'POST',
      headers: { ...HEADERS, 'x-admin-user': 'status-page' },
      signal: AbortSignal.timeout(10_000),
    });
    if (response.status === 401) return showSignIn('The session ended: sign in again.');
    if (!response.ok) return notify(`Could not ${action} ${id}: ${await errorMessage(response)}`, true);
    const body = await response.json();
    const current = data?.pools?.[pool]?.deployments?.find((d) => d.id === id);
    if (current && body.deployment) Object.assign(current, body.deployment);
    render();
    notify(
      body.scope === 'instance'
        ? `${id} ${DONE[action]} on this instance only: the shared store is not answering (it hears of it when it is back).`
        : `${id} ${DONE[action]} for every instance.`,
      body.scope === 'instance',
    );
  } catch {
    notify(`Could not ${action} ${id}: the gateway did not answer.`, true);
  } finally {
    button.disabled = false;
    poll();
  }
}

function notify(message, warning = false) {
  clearTimeout(noticeTimer);
  ui.notice.textContent = message;
  ui.notice.className = warning ? 'notice warning' : 'notice';
  ui.notice.hidden = false;
  noticeTimer = setTimeout(() => (ui.notice.hidden = true), 8000);
}

// ---- drawing -------------------------------------------------------------------------------------

/** "42 s", "3 min 05 s", "5 h 12 min". */
function timeLeft(ms) {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, '0')} s`;
  return `${Math.floor(seconds / 3600)} h ${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')} min`;
}

/** [kind, text] for each state the deployment is in; "in rotation" when none, then a slow start under way. */
function states(d, now, slowStartMs = 0) {
  const list = [];
  if (d.drained) list.push(['drained', 'drained']);
  if (d.cooldownUntil > now) list.push(['cooling', `cooling down · ${timeLeft(d.cooldownUntil - now)} left`]);
  if (d.circuit === 'open') {
    list.push([
      'open',
      d.circuitOpenUntil > now ? `circuit open · ${timeLeft(d.circuitOpenUntil - now)} left` : 'circuit open · probe due',
    ]);
  } else if (d.circuit === 'half-open') {
    list.push(['half-open', 'circuit half-open · probing']);
  }
  if (list.length === 0) list.push(['ok', 'in rotation']);
  const ramped = now - (d.slowStartSince ?? 0);
  if (d.slowStartSince > 0 && ramped >= 0 && ramped < slowStartMs) {
    const share = Math.round(100 * (0.1 + (0.9 * ramped) / slowStartMs));
    list.push(['ramping', `slow start · ${share} % of its share · ${timeLeft(slowStartMs - ramped)} left`]);
  }
  return list;
}

function meter(label) {
  const row = el('div', 'meter');
  const bar = el('div', 'bar');
  bar.setAttribute('role', 'meter');
  bar.setAttribute('aria-label', label);
  bar.setAttribute('aria-valuemin', '0');
  bar.setAttribute('aria-valuemax', '100');
  const fill = el('div', 'fill');
  bar.append(fill);
  const value = el('span', 'meter-value');
  row.append(el('span', 'meter-label', label), bar, value);
  return { row, bar, fill, value };
}

function setMeter(m, used, budget, unit) {
  if (budget) {
    const ratio = used / budget;
    const percent = Math.round(ratio * 100);
    m.fill.style.width = `${Math.min(100, ratio * 100)}%`;
    m.fill.className = `fill ${ratio >= 0.9 ? 'high' : ratio >= 0.7 ? 'mid' : 'low'}`;
    m.bar.classList.remove('unlimited');
    m.bar.setAttribute('aria-valuenow', String(Math.min(100, percent)));
    m.value.textContent = `${numbers.format(used)} / ${numbers.format(budget)} ${unit} · ${percent} %`;
  } else {
    m.fill.style.width = '0%';
    m.bar.classList.add('unlimited');
    m.bar.removeAttribute('aria-valuenow');
    m.value.textContent = `${numbers.format(used)} · no ${unit} budget`;
  }
}

function createCard(pool, id) {
  const card = el('article', 'deployment');
  card.dataset.deployment = id;
  const head = el('header', 'deployment-head');
  const badges = el('div', 'badges');
  head.append(el('h3', 'deployment-id', id), badges);
  const tokens = meter('Tokens');
  const requests = meter('Requests');
  const facts = el('p', 'facts');
  const actions = el('div', 'actions');
  const toggle = el('button', 'toggle');
  toggle.type = 'button';
  toggle.addEventListener('click', () => act(pool, id, card.dataset.drained === 'true' ? 'enable' : 'drain', toggle));
  const reset = el('button', 'quiet', 'Reset');
  reset.type = 'button';
  reset.title = 'End its cooldown, close its circuit and forget its ejections (drained stays as it is)';
  reset.addEventListener('click', () => act(pool, id, 'reset', reset));
  actions.append(toggle, reset);
  card.append(head, tokens.row, requests.row, facts, actions);
  return { card, badges, badgeKey: '', tokens, requests, facts, toggle, reset };
}

/** A probe older than this is not shown beside the deployment. */
const PROBE_SHOWN_MS = 10 * 60_000;

function updateCard(c, d, now, slowStartMs) {
  const list = states(d, now, slowStartMs);
  const key = list.map(([kind, text]) => `${kind}:${text}`).join('|');
  if (key !== c.badgeKey) {
    c.badges.replaceChildren(...list.map(([kind, text]) => el('span', `badge ${kind}`, text)));
    c.badgeKey = key;
  }
  c.card.dataset.drained = String(d.drained);
  c.card.dataset.state = list.map(([kind]) => kind).join(' ');
  c.card.classList.toggle('is-drained', d.drained);
  c.card.classList.toggle('is-out', list[0][0] !== 'ok');
  setMeter(c.tokens, d.tokensInWindow, d.tpm, 'TPM');
  setMeter(c.requests, d.requestsInWindow, d.rpm, 'RPM');
  const probe =
    d.lastProbe && now - d.lastProbe.at < PROBE_SHOWN_MS ? ` · probed ${timeLeft(now - d.lastProbe.at)} ago: ${d.lastProbe.result}` : '';
  c.facts.textContent = `${d.inFlight} in flight${probe}`;
  const label = d.drained ? 'Enable' : 'Drain';
  if (c.toggle.textContent !== label) c.toggle.textContent = label;
  c.toggle.title = d.drained ? 'Back into rotation for every instance' : 'Out of rotation for every instance; requests in flight finish';
  c.toggle.classList.toggle('danger', !d.drained);
}

function createSection(name) {
  const section = el('section', 'pool');
  section.dataset.pool = name;
  const head = el('header', 'pool-head');
  const summary = el('span', 'pool-summary');
  head.append(el('h2', 'pool-name', name), summary);
  const grid = el('div', 'grid');
  section.append(head, grid);
  const s = { section, summary, grid, cards: new Map() };
  sections.set(name, s);
  return s;
}

function updateSection(s, pool, now) {
  const deployments = pool.deployments ?? [];
  const ids = new Set(deployments.map((d) => d.id));
  for (const [id, c] of s.cards) {
    if (!ids.has(id)) {
      c.card.remove();
      s.cards.delete(id);
    }
  }
  deployments.forEach((d, i) => {
    let c = s.cards.get(d.id);
    if (!c) {
      c = createCard(s.section.dataset.pool, d.id);
      s.cards.set(d.id, c);
    }
    if (s.grid.children[i] !== c.card) s.grid.insertBefore(c.card, s.grid.children[i] ?? null);
    updateCard(c, d, now, pool.slowStartMs);
  });
  const inRotation = deployments.filter((d) => states(d, now)[0][0] === 'ok').length;
  const inFlight = deployments.reduce((sum, d) => sum + d.inFlight, 0);
  const lane = pool.lane ? ` · batch lines: ${pool.lane.waiting} waiting, ${pool.lane.delayed} delayed, ${pool.lane.active} running` : '';
  s.summary.textContent = `${pool.strategy} · ${inRotation} of ${deployments.length} in rotation · ${inFlight} in flight${lane}`;
}

function render() {
  if (!data?.pools) return;
  // The server's clock now: its `now` at the answer plus what passed here since (no trust in this machine's clock).
  const now = (data.now ?? Date.now()) + (performance.now() - fetchedAt);
  const names = Object.keys(data.pools);
  ui.pools.querySelector(':scope > .empty')?.remove();
  for (const [name, s] of sections) {
    if (!(name in data.pools)) {
      s.section.remove();
      sections.delete(name);
    }
  }
  names.forEach((name, i) => {
    const s = sections.get(name) ?? createSection(name);
    if (ui.pools.children[i] !== s.section) ui.pools.insertBefore(s.section, ui.pools.children[i] ?? null);
    updateSection(s, data.pools[name], now);
  });
  if (names.length === 0) ui.pools.replaceChildren(el('p', 'empty', 'No pools are configured.'));
  ui.pools.classList.toggle('stale', ui.live.classList.contains('stale'));
}

poll();
