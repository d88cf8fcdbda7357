/**
 * The gateway's YAML config, validated at the edge. Everything inside the process trusts these types.
 * Unknown keys are errors (a typo such as `tmp:` must not silently disable a budget).
 */
import { z } from 'zod';
import { STRATEGIES } from '../store/types.ts';

const positiveInt = z.number({ error: 'must be a number' }).int('must be a whole number').positive('must be positive');

/** A Microsoft Entra ID client id (a GUID), as a user-assigned managed identity has one. */
const CLIENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const deploymentFields = z.strictObject({
  id: z
    .string()
    .min(1)
    .regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, ".", "_" or "-"'),
  endpoint: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }),
  deployment: z.string().min(1),
  /** The deployment's key; or none, with `auth: entra`. */
  apiKey: z.string().min(1).optional(),
  /** `entra`: a Microsoft Entra ID token (managed identity or DefaultAzureCredential) instead of a key. */
  auth: z.literal('entra', { error: 'must be "entra" (or leave it out and set apiKey)' }).optional(),
  /** With `auth: entra`: the client id of the user-assigned managed identity to use. */
  clientId: z.string().regex(CLIENT_ID, 'must be a client id (a GUID)').optional(),
  tpm: positiveInt.optional(),
  rpm: positiveInt.optional(),
  priority: positiveInt.default(1),
  weight: positiveInt.default(1),
  apiVersion: z
    .string()
    .regex(/^\d{4}-\d{2}-\d{2}(-preview)?$|^(preview|latest)$/, 'must look like 2024-10-21')
    .optional(),
  /** Model behind the deployment (e.g. gpt-4o); picks the tokenizer when the pool does not. */
  model: z.string().min(1).optional(),
});

const deploymentSchema = deploymentFields.superRefine((deployment, ctx) => {
  // Exactly one way to authenticate upstream.
  if (deployment.auth === 'entra' && deployment.apiKey !== undefined)
    ctx.addIssue({ code: 'custom', path: ['apiKey'], message: 'set either apiKey or auth: entra, not both' });
  if (deployment.auth === undefined && deployment.apiKey === undefined)
    ctx.addIssue({ code: 'custom', path: ['apiKey'], message: 'required (or auth: entra for a Microsoft Entra ID token)' });
  if (deployment.clientId !== undefined && deployment.auth !== 'entra')
    ctx.addIssue({ code: 'custom', path: ['clientId'], message: 'only with auth: entra' });
});

const poolSchema = z.strictObject({
  strategy: z.enum(STRATEGIES, { error: `must be one of ${STRATEGIES.join(', ')}` }).default('least-requests'),
  /** Tokenizer for the arrival estimate; inferred from the deployments' model when absent. */
  tokenizer: z.enum(['o200k_base', 'cl100k_base']).optional(),
  /** Output tokens assumed when a request sets no max_tokens. */
  defaultMaxTokens: positiveInt.default(1024),
  /** When no deployment has room, wait up to this long for one (0: answer 429 at once). */
  maxWaitMs: z.number().int().min(0).max(120_000).default(0),
  /**
   * A deployment back from an open circuit or a long cooldown (gateway.longCooldownMs) gets a share of
   * the new requests that grows from 10 % to 100 % over this long, for every instance (as Envoy's slow
   * start). 0: full traffic at once.
   */
  slowStartMs: z.number().int().min(0).max(600_000).default(30_000),
  /**
   * The cheap request the cluster-wide prober sends to a deployment out of rotation (open circuit, long
   * cooldown, quota exhausted) to bring it back early: `chat` (one token of max_completion_tokens, fine
   * for reasoning models), `embeddings` (a one-word input), or `off` where any call costs too much.
   */
  probe: z.enum(['chat', 'embeddings', 'off'], { error: 'must be chat, embeddings or off' }).default('chat'),
  /** The background lane (Batch API) for this pool; the gateway-wide `background` settings when absent. */
  background: z
    .strictObject({
      /** Batch lines of this pool run at all. */
      enabled: z.boolean().default(true),
      /** Overrides background.reserve for this pool. */
      reserve: z.number().min(0).max(0.95).optional(),
    })
    .optional(),
  deployments: z
    .array(deploymentSchema)
    .min(1, 'a pool needs at least one deployment')
    .superRefine((deployments, ctx) => {
      const seen = new Set<string>();
      deployments.forEach((d, index) => {
        if (seen.has(d.id)) ctx.addIssue({ code: 'custom', path: [index, 'id'], message: `duplicate deployment id "${d.id}"` });
        seen.add(d.id);
      });
    }),
});

const clientSchema = z.strictObject({
  name: z.string().min(1),
  apiKey: z.string().min(8, 'use a key of at least 8 characters'),
  tpm: positiveInt.optional(),
  rpm: positiveInt.optional(),
});

const breakerSchema = z.strictObject({
  /** Percentage of failed calls in the rolling window that opens the circuit. */
  errorThresholdPercentage: z.number().min(1).max(100).default(50),
  /** Calls in the rolling window before the percentage is considered. */
  volumeThreshold: positiveInt.default(5),
  rollingCountTimeoutMs: positiveInt.default(10_000),
  /** How long an open circuit stays open before one probe is allowed. */
  resetTimeoutMs: positiveInt.default(30_000),
});

/**
 * Outlier detection in the manner of Envoy's, beside the breaker's failure rate: a deployment whose
 * attempts fail this many times in a row (5xx, 408, connection failures, timeouts, bodies that broke
 * off or stalled) is ejected for every instance, for baseEjectionMs × n (its n-th ejection in a row),
 * at most maxEjectionMs. The last deployment of a pool in rotation is never ejected.
 */
const outlierSchema = z.strictObject({
  /** Failures in a row that eject a deployment; 0 turns ejection off (the breaker's rate still applies). */
  consecutiveFailures: z.number().int().min(0).max(1000).default(5),
  /** The first ejection's length; each ejection in a row adds as much again. */
  baseEjectionMs: positiveInt.default(30_000),
  /** The longest an ejection lasts. */
  maxEjectionMs: positiveInt.default(300_000),
});

/** The client-side timeouts in the order they must fire: Node's whole-request backstop after the gateway's own. */
function checkClientTimeouts(
  gateway: { headersTimeoutMs: number; bodyTimeoutMs: number; requestTimeoutMs: number },
  ctx: z.RefinementCtx,
): void {
  const least = gateway.headersTimeoutMs + gateway.bodyTimeoutMs;
  if (gateway.requestTimeoutMs < least)
    ctx.addIssue({
      code: 'custom',
      path: ['gateway', 'requestTimeoutMs'],
      message: `must be at least headersTimeoutMs + bodyTimeoutMs (${least})`,
    });
}

/** The shutdown delay is part of the grace: what is left of it is for the requests in flight. */
function checkShutdown(gateway: { shutdownDelayMs: number; shutdownGraceMs: number }, ctx: z.RefinementCtx): void {
  if (gateway.shutdownGraceMs <= gateway.shutdownDelayMs)
    ctx.addIssue({
      code: 'custom',
      path: ['gateway', 'shutdownGraceMs'],
      message: `must be longer than shutdownDelayMs (${gateway.shutdownDelayMs})`,
    });
}

const gatewaySchema = z.strictObject({
  /** Largest request body accepted (413 above). Azure's own limit for chat is far larger only with images. */
  maxBodyBytes: positiveInt.default(4 * 1024 * 1024),
  /** Time a client has to send its whole request body once its headers arrived (408 after it). */
  bodyTimeoutMs: positiveInt.default(30_000),
  /**
   * Time a client has to send its request headers, from its first byte (or, on a new connection,
   * from the connection): 408 after it. Headers arrive in one packet or a few; a client still
   * sending them after 10 s is holding a connection, not sending a request. Only the headers count:
   * a keep-alive connection's idle time between requests does not (since Node 18).
   */
  headersTimeoutMs: positiveInt.default(10_000),
  /**
   * Time a client has to send its whole request, headers and body (Node's requestTimeout; 408
   * after it). It ends when the request has arrived: a response may stream for as long as it
   * lasts. At least headersTimeoutMs + bodyTimeoutMs, so that the gateway's own 408 for a slow body
   * comes first; this is the backstop for requests the gateway does not read itself.
   */
  requestTimeoutMs: positiveInt.default(60_000),
  /**
   * How long an idle keep-alive connection stays open (Node adds 1 s before it closes). Above the
   * load balancer's own idle timeout (nginx's upstream keepalive_timeout: 60 s, AWS ALB: 60 s), so
   * that the balancer, not the gateway, closes an idle connection and never sends a request into a
   * connection the gateway is closing.
   */
  keepAliveTimeoutMs: positiveInt.default(65_000),
  /**
   * Connections one instance holds at once; past it Node closes new ones on accept (counted in
   * spillway_connections_refused_total, logged). A streamed request holds 2 file descriptors (the
   * client's socket and the upstream's): 10 000 connections need 20 000 plus a few hundred (Redis,
   * idle upstream sockets), which fits a hard open-file limit of 21 000 or more (Node raises its
   * soft limit to the hard one at start); with a lower `ulimit -Hn`, at most (limit - 1000) / 2.
   * Far more connections than this are better spread over more instances.
   */
  maxConnections: positiveInt.default(10_000),
  /** Upstream tries per request, the first included. */
  maxAttempts: z.number().int().min(1).max(10).default(3),
  /** Time budget for all attempts of one request until its first response byte. */
  deadlineMs: positiveInt.default(120_000),
  /**
   * Upstream sockets one instance opens to one origin (an Azure resource's host) at once; an attempt past
   * it waits in the agent's queue holding its lease (spillway_upstream_queued_requests shows it). Azure
   * takes far more per resource than one instance ever sends, so the default matches maxConnections:
   * no request waits for a socket while the instance has room for it. Lower it only to protect a
   * downstream that cannot take as many.
   */
  upstreamMaxSockets: positiveInt.max(1_000_000).default(10_000),
  /** Time one upstream attempt may take to send its response headers. */
  upstreamTimeoutMs: positiveInt.default(60_000),
  /** Time a stream may stay silent before the gateway gives up on it. */
  streamIdleTimeoutMs: positiveInt.default(120_000),
  /**
   * Upstream response headers the client does not see, beyond the hop-by-hop ones and the
   * deployment's own x-ratelimit-* (always dropped): by default the one that names the internal
   * deployment. `apim-request-id` is kept (Azure support asks for it). [] passes all on.
   */
  hiddenResponseHeaders: z
    .array(z.string().regex(/^[A-Za-z0-9-]+$/, 'must be a header name'))
    .max(100)
    .default(['x-ms-deployment-name']),
  /** Cooldown after a 429 that names no retry time. */
  defaultCooldownMs: positiveInt.default(10_000),
  /**
   * A cooldown at least this long is a long one: the prober checks the deployment while it is out, and it
   * comes back by the pool's slow start.
   */
  longCooldownMs: positiveInt.default(10_000),
  /** A Retry-After at least this long is a quota exhaustion, not a per-minute limit. */
  quotaExhaustedAfterMs: positiveInt.default(5 * 60_000),
  /** Lease length; live leases are renewed every third of it, a dead instance's expire after it. */
  leaseMs: z.number().int().min(1000).default(30_000),
  /**
   * Length of the sliding usage window that tpm/rpm budget. Azure's is a minute; shorter only to
   * run simulations and benchmarks in scaled time (the simulator's windowMs must match).
   */
  windowMs: z
    .number()
    .int()
    .min(600)
    .refine((ms) => ms % 60 === 0, 'must be a multiple of 60')
    .default(60_000),
  breaker: breakerSchema.default(() => breakerSchema.parse({})),
  outlier: outlierSchema.default(() => outlierSchema.parse({})),
  /**
   * Shutdown (SIGTERM, SIGINT): /readyz answers 503 at once, and the listener keeps accepting
   * connections this long, so that the load balancer sees the instance leave before its connections
   * are refused. 0: refused at once.
   */
  shutdownDelayMs: z.number().int().min(0).default(5000),
  /**
   * Shutdown: the longest it lasts, from the signal (the delay included). Requests and streams in
   * flight finish within it; those still running then are cut, their leases released. Keep it below
   * the orchestrator's own limit (Kubernetes' terminationGracePeriodSeconds: 30 s by default).
   */
  shutdownGraceMs: positiveInt.default(25_000),
});

/**
 * The background lane: Batch API lines run on the pools' idle capacity by BullMQ workers in every
 * instance (Redis only), and the cluster-wide prober of deployments out of rotation.
 */
const backgroundSchema = z.strictObject({
  /** This instance runs batch lines and probes (it takes uploads and batches either way). */
  workers: z.boolean().default(true),
  /**
   * Share of every pool's tokens and requests in window that batch lines never take: a line is admitted
   * only while the deployment stays below (1 - reserve) of its budgets after it, and never while
   * interactive requests wait in the pool's queue.
   */
  reserve: z.number().min(0).max(0.95).default(0.3),
  /** Lines one instance runs at once, per pool. */
  concurrency: z.number().int().min(1).max(256).default(4),
  /** Lines all instances together run at once, per pool (BullMQ global concurrency). */
  poolConcurrency: z.number().int().min(1).max(10_000).default(32),
  /** Largest batch input file (OpenAI's limit is 200 MB). */
  maxFileBytes: positiveInt.max(200 * 1024 * 1024).default(50 * 1024 * 1024),
  /** Most request lines in one input file (OpenAI's limit). */
  maxFileLines: positiveInt.max(50_000).default(50_000),
  /** Redis memory that files and results may take together; uploads are refused (never evicted) past it. */
  storeBytes: positiveInt.default(1024 * 1024 * 1024),
  /** How long files, batches and their results are kept. */
  retentionMs: positiveInt.default(7 * 24 * 60 * 60_000),
  /** Tries of a line that gets no answer or a 5xx, before that is its result (429s are waited out, not counted). */
  lineAttempts: z.number().int().min(1).max(20).default(5),
  /** A line's BullMQ lock: the lines of an instance that died run again this long after. */
  lockMs: z.number().int().min(1000).max(600_000).default(30_000),
  /** How often the prober looks for deployments out of rotation (one run for the whole cluster). */
  probeIntervalMs: z.number().int().min(200).max(600_000).default(5000),
});

export const configSchema = z
  .strictObject({
    gateway: gatewaySchema.default(() => gatewaySchema.parse({})),
    pools: z
      .record(z.string().regex(/^[A-Za-z0-9._-]+$/, 'pool names use letters, digits, ".", "_" or "-"'), poolSchema)
      .refine((pools) => Object.keys(pools).length > 0, 'define at least one pool'),
    clients: z.array(clientSchema).optional(),
    background: backgroundSchema.default(() => backgroundSchema.parse({})),
  })
  .superRefine((config, ctx) => {
    checkClientTimeouts(config.gateway, ctx);
    checkShutdown(config.gateway, ctx);
    const names = new Set<string>();
    const keys = new Set<string>();
    config.clients?.forEach((client, index) => {
      if (names.has(client.name))
        ctx.addIssue({ code: 'custom', path: ['clients', index, 'name'], message: `duplicate client name "${client.name}"` });
      if (keys.has(client.apiKey))
        ctx.addIssue({ code: 'custom', path: ['clients', index, 'apiKey'], message: 'two clients share one key' });
      names.add(client.name);
      keys.add(client.apiKey);
    });
  });

export type GatewayConfig = z.infer<typeof configSchema>;
export type PoolConfig = GatewayConfig['pools'][string];
export type DeploymentConfig = PoolConfig['deployments'][number];
export type ClientConfig = NonNullable<GatewayConfig['clients']>[number];
export type GatewaySettings = GatewayConfig['gateway'];
export type BackgroundSettings = GatewayConfig['background'];
