/** The process environment of DESIGN.md, validated once at start. */
import { z } from 'zod';

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('0.0.0.0'),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
    .optional(),
  GATEWAY_CONFIG: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
  ADMIN_API_KEY: z.string().min(8, 'use at least 8 characters').optional(),
});

/** Where the built-in demo listens when HOST is not set: its client key is public. */
export const DEMO_HOST = '127.0.0.1';

export type GatewayEnv = z.infer<typeof envSchema> & {
  /**
   * The address to listen on: HOST when set; otherwise its default 0.0.0.0 for a configured
   * gateway (containers need it), and 127.0.0.1 for the built-in demo (no GATEWAY_CONFIG).
   */
  listenHost: string;
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
  return { ...data, listenHost };
}
