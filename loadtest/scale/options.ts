/** The scale bench's command line, validated at the edge, with the full and the --quick sizes. */
import { parseArgs } from 'node:util';
import { z } from 'zod';

export const PHASES = ['streams', 'chunks', 'store', 'cluster'] as const;
export type PhaseKey = (typeof PHASES)[number];

export const HELP = `Scale benchmark (issue 14): one gateway against the bare Node proxy, the store against its previous design,
one Redis against a 3-master Redis Cluster, all measured side by side in one run.

  npm run bench:scale [-- options]

  --quick               a small run (about 2 minutes): fewer streams, shorter windows
  --phases LIST         any of ${PHASES.join(',')} (default: all)
  --rounds N            interleaved rounds of the stream phases (default 2)
  --levels LIST         concurrent streams at 1 token/s (default 1000,5000,10000)
  --chunk-streams N     streams at 20 tokens/s for the CPU per chunk (default 400)
  --workers N           stream worker processes sharing the load (default 4)
  --open-rate N         new streams per second while a level opens (default 500; --quick 1000)
  --probes N            probe streams per step through the proxy, as many direct (default 40)
  --chunk-window MS     each CPU-per-chunk window (default 4000)
  --cluster-step MS     each load step of the cluster phase (default 3000)
  --cluster-clients L   store client processes of the cluster phase's steps (default 1,2,4)
  --no-doc              do not rewrite the results section of docs/benchmarks.md nor docs/scale.svg
  --results-dir DIR     where the JSON goes (default loadtest/results)
  --json FILE           also write the JSON here
  --help                this text
`;

const optionsSchema = z.strictObject({
  quick: z.boolean(),
  phases: z.array(z.enum(PHASES)).min(1),
  rounds: z.number().int().min(1).max(5),
  levels: z.array(z.number().int().min(1).max(12_000)).min(1).max(5),
  chunkStreams: z.number().int().min(1).max(2000),
  /** Seconds of each CPU-per-chunk window. */
  chunkWindowMs: z.number().int().min(200).max(20_000),
  chunkRounds: z.number().int().min(1).max(6),
  workers: z.number().int().min(1).max(8),
  probes: z.number().int().min(1).max(200),
  openPerSecond: z.number().min(10).max(5000),
  /** Each load step of the cluster phase, ms. */
  clusterStepMs: z.number().int().min(200).max(10_000),
  /** The store clients (processes) the cluster phase ramps up to. */
  clusterClients: z.array(z.number().int().min(1).max(8)).min(1).max(4),
  clusterRounds: z.number().int().min(1).max(4),
  noDoc: z.boolean(),
  resultsDir: z.string().min(1).optional(),
  json: z.string().min(1).optional(),
});

export type ScaleOptions = z.infer<typeof optionsSchema>;

const FULL = {
  rounds: 2,
  levels: [1000, 5000, 10_000],
  chunkStreams: 400,
  chunkWindowMs: 4000,
  chunkRounds: 3,
  probes: 40,
  // Not faster: on 2 shared cores a faster ramp fills the proxies' accept queues (SYN retries of 1–7 s).
  openPerSecond: 500,
  clusterStepMs: 3000,
  clusterClients: [1, 2, 4],
  clusterRounds: 2,
};
const QUICK: typeof FULL = {
  rounds: 2,
  levels: [200, 1000],
  chunkStreams: 150,
  chunkWindowMs: 2000,
  chunkRounds: 2,
  probes: 10,
  openPerSecond: 1000,
  clusterStepMs: 1500,
  clusterClients: [1, 2],
  clusterRounds: 1,
};

const list = (text: string) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

/** The options, or an exit code (help, an error already printed). */
export function parseOptions(argv = process.argv.slice(2)): ScaleOptions | number {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean', default: false },
        phases: { type: 'string' },
        rounds: { type: 'string' },
        levels: { type: 'string' },
        'chunk-streams': { type: 'string' },
        workers: { type: 'string' },
        probes: { type: 'string' },
        'open-rate': { type: 'string' },
        'chunk-window': { type: 'string' },
        'cluster-step': { type: 'string' },
        'cluster-clients': { type: 'string' },
        'no-doc': { type: 'boolean', default: false },
        'results-dir': { type: 'string' },
        json: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const base = values.quick ? QUICK : FULL;
  const parsed = optionsSchema.safeParse({
    ...base,
    quick: values.quick,
    phases: values.phases ? list(values.phases) : [...PHASES],
    ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
    ...(values.levels ? { levels: list(values.levels).map(Number) } : {}),
    ...(values['chunk-streams'] ? { chunkStreams: Number(values['chunk-streams']) } : {}),
    ...(values.probes ? { probes: Number(values.probes) } : {}),
    ...(values['open-rate'] ? { openPerSecond: Number(values['open-rate']) } : {}),
    ...(values['chunk-window'] ? { chunkWindowMs: Number(values['chunk-window']) } : {}),
    ...(values['cluster-step'] ? { clusterStepMs: Number(values['cluster-step']) } : {}),
    ...(values['cluster-clients'] ? { clusterClients: list(values['cluster-clients']).map(Number) } : {}),
    workers: values.workers ? Number(values.workers) : 4,
    noDoc: values['no-doc'],
    ...(values['results-dir'] ? { resultsDir: values['results-dir'] } : {}),
    ...(values.json ? { json: values.json } : {}),
  });
  if (!parsed.success) {
    process.stderr.write(`bench:scale: ${z.prettifyError(parsed.error)}\n`);
    return 2;
  }
  return parsed.data;
}

/** The whole run's bound: every phase's own bounds, summed, and a margin (the bench stops at it). */
export function hardCapMs(options: ScaleOptions): number {
  return (options.quick ? 5 : 14) * 60_000;
}
