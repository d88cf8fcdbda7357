/** The process environment of DESIGN.md, validated once at start. */
import { z } from 'zod';
import { parseClusterNodes, redisTargetFrom, type RedisTarget } from '../shared/store/redis-target.ts';

const envSchema = z
  .object({
    PORT: z.coerce.number().int().min(0).max(65535).default(8080),
    HOST: z.string().default('0.0.0.0'),
    REDIS_URL: z
      .string()
      .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
      .optional(),
    // host:port seeds of a Redis Cluster (or redis[s]://user:password@host:port for auth and TLS).
    REDIS_CLUSTER_NODES: z
      .string()
      .superRefine((text, ctx) => {
        try {
          parseClusterNodes(text);
        } catch (error) {
          ctx.addIssue({ code: 'custom', message: `must be comma-separated host:port seeds: ${(error as Error).message}` });
        }
      })
      .optional(),
    GATEWAY_CONFIG: z.string().min(1).optional(),
    LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
    ADMIN_API_KEY: z.string().min(8, 'use at least 8 characters').optional(),
  })
  .refine((env) => !(env.REDIS_URL && env.REDIS_CLUSTER_NODES), {
    message: 'set REDIS_URL (one Redis) or REDIS_CLUSTER_NODES (a Redis Cluster), not both',
    path: ['REDIS_CLUSTER_NODES'],
  });

/** Where the built-in demo listens when HOST is not set: its client key is public. */
export const DEMO_HOST = '127.0.0.1';

export type GatewayEnv = z.infer<typeof envSchema> & {
  /**
   * The address to listen on: HOST when set; otherwise its default 0.0.0.0 for a configured
   * gateway (containers need it), and 127.0.0.1 for the built-in demo (no GATEWAY_CONFIG).
   */
  listenHost: string;
  /** REDIS_URL or REDIS_CLUSTER_NODES as one target; undefined → in-memory store. */
  redis: RedisTarget | undefined;
};

export function readEnv(env: NodeJS.ProcessEnv = process.env): GatewayEnv {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''));
  const result = envSchema.safeParse(cleaned);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  - ${issue.path.join('.')}: ${issue.message}`);
    throw new Error(`invalid environment:\n${lines.join('\n')}`);
  }
  const data = result.data;
  const listenHost = cleaned.HOST === undefined && data.GATEWAY_CONFIG === undefined ? DEMO_HOST : data.HOST;
  return { ...data, listenHost, redis: redisTargetFrom(data) };
}
