/**
 * Validation of SimulatorOptions (programmatic and from the CLI's YAML), so a typo in a load-test
 * config fails at start with the field's name instead of silently simulating something else.
 */
import { z } from 'zod';
import type { SimulatorOptions } from './types.ts';

const latencySchema = z.strictObject({ ttftMs: z.number().min(0), perTokenMs: z.number().min(0) });

export const deploymentSchema = z.strictObject({
  name: z
    .string()
    .min(1)
    .regex(/^[^/?#]+$/, 'a deployment name cannot contain / ? or #'),
  model: z.string().min(1).optional(),
  tpm: z.number().int().positive().optional(),
  rpm: z.number().min(0).optional(),
  ptu: z.strictObject({ tokensPerMinute: z.number().positive() }).optional(),
  region: z.string().min(1).optional(),
  latency: latencySchema.optional(),
  completionTokens: z.number().int().min(0).optional(),
});

export const simulatorOptionsSchema = z
  .strictObject({
    port: z.number().int().min(0).max(65535).optional(),
    host: z.string().min(1).optional(),
    apiKeys: z.array(z.string().min(1)).min(1),
    deployments: z.array(deploymentSchema).min(1),
    windowMs: z.number().positive().optional(),
    defaultMaxTokens: z.number().int().min(1).optional(),
    latency: latencySchema.optional(),
    countRejected: z.boolean().optional(),
  })
  .superRefine((options, issues) => {
    const seen = new Set<string>();
    options.deployments.forEach((deployment, index) => {
      if (seen.has(deployment.name)) {
        issues.addIssue({
          code: 'custom',
          path: ['deployments', index, 'name'],
          message: `duplicate deployment name '${deployment.name}'`,
        });
      }
      seen.add(deployment.name);
      if (deployment.ptu && (deployment.tpm !== undefined || deployment.rpm !== undefined)) {
        issues.addIssue({ code: 'custom', path: ['deployments', index, 'ptu'], message: 'a PTU deployment has no tpm/rpm' });
      }
    });
  });

/** Validated options, or an Error naming every bad field. */
export function validateOptions(options: unknown): SimulatorOptions {
  const parsed = simulatorOptionsSchema.safeParse(options);
  if (!parsed.success) throw new Error(`invalid simulator options:\n${z.prettifyError(parsed.error)}`);
  return parsed.data;
}
