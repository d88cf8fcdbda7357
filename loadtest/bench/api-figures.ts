/**
 * Phase 4's figures (apis.ts): per target and API, the latency of 200s over every round, what it
 * adds to direct's for the same API, each round's added median (how much it moved: the noise), and
 * the added median of a create and of a follow-up over the chat completion's of the same target.
 */
import { fmt } from '../lib/format.ts';
import { summarize, type Summary } from '../lib/stats.ts';
import { API_NAMES, type ApiName, type ApiPhase } from './apis.ts';
import { LABELS, type BenchOptions, type TargetKey } from './options.ts';

/** Figures of the JSON to the microsecond (ratios to the thousandth). */
const round3 = (value: number) => Math.round(value * 1000) / 1000;

export interface ApiRow {
  key: TargetKey;
  label: string;
  api: ApiName;
  /** Why the target has no figures (it does not serve the Responses API); null when it ran. */
  unavailable: string | null;
  latency: Summary | null;
  /** Against direct's runs of the same API: p50 and p90 of all rounds (null without direct). */
  addedP50: number | null;
  addedP90: number | null;
  /** Each round's added p50 (its run against direct's of the same round), by round; null where either is missing. */
  addedP50ByRound: (number | null)[];
  /** This API's added p50 over the chat completion's of the same target; null for chat, for direct, or when chat's is ≤ 0. */
  addedVsChat: number | null;
  achievedRps: number | null;
  completed: number;
  errors: number;
  /** CPU µs per request of the target's gateway processes during the API's runs. */
  gatewayUsPerRequest: number | null;
  /** Cores that processes outside the bench used during the API's runs (the machine's noise). */
  foreignCores: number | null;
}

/** One row per target and API, in the phase's target order; a target without the Responses API gets one n/a row. */
export function apiRowsOf(phase: ApiPhase, options: BenchOptions, gatewayPids: Map<TargetKey, number[]>): ApiRow[] {
  const rows: ApiRow[] = [];
  const direct = phase.runs.get('direct');
  for (const key of options.apiKeys) {
    const unavailable = phase.unavailable.get(key);
    const mine = phase.runs.get(key);
    if (unavailable !== undefined || !mine) {
      rows.push({
        key,
        label: LABELS[key],
        api: 'chat',
        unavailable: unavailable ?? 'not run',
        latency: null,
        addedP50: null,
        addedP90: null,
        addedP50ByRound: [],
        addedVsChat: null,
        achievedRps: null,
        completed: 0,
        errors: 0,
        gatewayUsPerRequest: null,
        foreignCores: null,
      });
      continue;
    }
    const byApi = new Map<ApiName, ApiRow>();
    for (const api of API_NAMES) {
      const aggregate = mine[api];
      const latency = summarize(aggregate.runs.flatMap((r) => Array.from(r.samples?.latency200 ?? [])));
      const base = direct && key !== 'direct' ? direct[api] : undefined;
      const baseLatency = base ? summarize(base.runs.flatMap((r) => Array.from(r.samples?.latency200 ?? []))) : null;
      const completed = aggregate.runs.reduce((acc, r) => acc + r.completed, 0);
      const loadMs = aggregate.runs.reduce((acc, r) => acc + r.loadMs, 0);
      const hasGateway = (gatewayPids.get(key) ?? []).length > 0;
      const byRound: (number | null)[] = Array.from({ length: options.rounds }, () => null);
      if (base) {
        aggregate.runs.forEach((run, index) => {
          const round = aggregate.rounds[index]!;
          const at = base.rounds.indexOf(round);
          const theirs = at === -1 ? undefined : base.runs[at]!.latencyByStatus['200']?.p50;
          const ours = run.latencyByStatus['200']?.p50;
          if (theirs !== undefined && ours !== undefined) byRound[round] = round3(ours - theirs);
        });
      }
      byApi.set(api, {
        key,
        label: LABELS[key],
        api,
        unavailable: null,
        latency,
        addedP50: latency && baseLatency ? round3(latency.p50 - baseLatency.p50) : null,
        addedP90: latency && baseLatency ? round3(latency.p90 - baseLatency.p90) : null,
        addedP50ByRound: byRound,
        addedVsChat: null,
        achievedRps: loadMs > 0 ? round3(completed / (loadMs / 1000)) : null,
        completed,
        errors: aggregate.runs.reduce((acc, r) => acc + r.errors, 0),
        gatewayUsPerRequest: hasGateway && completed > 0 ? Math.round((aggregate.cpu.gateway * 1000) / completed) : null,
        foreignCores: aggregate.cpu.wallMs > 0 ? round3(aggregate.cpu.foreign / aggregate.cpu.wallMs) : null,
      });
    }
    const chatAdded = byApi.get('chat')!.addedP50;
    for (const api of ['create', 'follow-up'] as const) {
      const row = byApi.get(api)!;
      row.addedVsChat = row.addedP50 !== null && chatAdded !== null && chatAdded > 0 ? round3(row.addedP50 / chatAdded) : null;
    }
    rows.push(...byApi.values());
  }
  return rows;
}

/** The figures to quote per target: the added median of each API, and the create's and the follow-up's over chat's. */
export interface ApiRatios {
  key: TargetKey;
  label: string;
  chat: number | null;
  create: number | null;
  followUp: number | null;
  createVsChat: number | null;
  followUpVsChat: number | null;
  /** The same ratios round by round (each round's added p50s): how far the noise moves them. */
  createVsChatByRound: (number | null)[];
  followUpVsChatByRound: (number | null)[];
}

export function apiRatiosOf(rows: ApiRow[]): ApiRatios[] {
  const out: ApiRatios[] = [];
  for (const key of new Set(rows.map((r) => r.key))) {
    if (key === 'direct') continue;
    const of = (api: ApiName) => rows.find((r) => r.key === key && r.api === api && r.unavailable === null);
    const chat = of('chat');
    if (!chat) continue;
    const byRound = (api: ApiName) =>
      chat.addedP50ByRound.map((c, round) => {
        const added = of(api)?.addedP50ByRound[round];
        return added !== undefined && added !== null && c !== null && c > 0 ? round3(added / c) : null;
      });
    out.push({
      key,
      label: chat.label,
      chat: chat.addedP50,
      create: of('create')?.addedP50 ?? null,
      followUp: of('follow-up')?.addedP50 ?? null,
      createVsChat: of('create')?.addedVsChat ?? null,
      followUpVsChat: of('follow-up')?.addedVsChat ?? null,
      createVsChatByRound: byRound('create'),
      followUpVsChatByRound: byRound('follow-up'),
    });
  }
  return out;
}

function range(all: (number | null)[]): string {
  const values = all.filter((v): v is number => v !== null);
  if (values.length === 0) return '–';
  return `${fmt(Math.min(...values), 2)}–${fmt(Math.max(...values), 2)}`;
}

/** The table of the console and of the doc: one row per target and API. */
export function apiTable(rows: ApiRow[], { apiRate }: BenchOptions): { header: string[]; rows: string[][] } {
  const header = [
    'target',
    'API',
    `p50 ms @${apiRate}/s`,
    'p90 ms',
    '+p50 ms',
    '+p90 ms',
    '+p50 by round',
    '+p50 ÷ chat',
    'gateway CPU µs/req',
    'foreign cores',
    'errors',
  ];
  return {
    header,
    rows: rows.map((row) => {
      if (row.unavailable !== null) return [row.label, 'n/a (no Responses API)', '–', '–', '–', '–', '–', '–', '–', '–', '–'];
      const direct = row.key === 'direct';
      return [
        row.label,
        row.api,
        fmt(row.latency?.p50, 2),
        fmt(row.latency?.p90, 2),
        direct ? '–' : fmt(row.addedP50, 2),
        direct ? '–' : fmt(row.addedP90, 2),
        direct ? '–' : range(row.addedP50ByRound),
        fmt(row.addedVsChat, 2),
        fmt(row.gatewayUsPerRequest, 0),
        fmt(row.foreignCores, 2),
        String(row.errors),
      ];
    }),
  };
}

/** Per target: the added medians side by side and the two ratios, with their range over the rounds. */
export function ratioTable(ratios: ApiRatios[]): { header: string[]; rows: string[][] } {
  return {
    header: ['target', '+p50 chat ms', '+p50 create ms', '+p50 follow-up ms', 'create ÷ chat', 'by round', 'follow-up ÷ chat', 'by round'],
    rows: ratios.map((r) => [
      r.label,
      fmt(r.chat, 2),
      fmt(r.create, 2),
      fmt(r.followUp, 2),
      fmt(r.createVsChat, 2),
      range(r.createVsChatByRound),
      fmt(r.followUpVsChat, 2),
      range(r.followUpVsChatByRound),
    ]),
  };
}
