/**
 * Where an attempt goes at the chosen deployment: its path, the api-version (the deployment's
 * override, else the client's, else the latest GA), and which body is sent. Responses and
 * conversations calls go to the resource's v1 API, or with the client's dated api-version where it
 * sent one (stateful-call.ts); the deployment's apiVersion override is for the classic routes only.
 */
import type { Operation } from '../../shared/operation.ts';
import type { Deployment } from '../pools.ts';
import { statefulBody, statefulPath, type StatefulCall } from './stateful-call.ts';
import { acceptsStreamOptions } from './usage-stream.ts';

/** The latest GA api-version, for OpenAI-style requests that name none. */
export const DEFAULT_API_VERSION = '2024-10-21';

export interface TargetRequest {
  operation: Operation | undefined;
  apiVersion: string | undefined;
  body: Buffer;
  bodyWithUsage: Buffer | undefined;
  stateful: StatefulCall | undefined;
}

export interface Target {
  /** Path and query at the deployment's origin. */
  path: string;
  body: Buffer;
  /** True when the body asks upstream for a usage chunk the client did not ask for (it is stripped again on the way back). */
  askedForUsage: boolean;
}

export function targetOf(deployment: Deployment, request: TargetRequest): Target {
  const { stateful } = request;
  if (stateful) {
    return {
      path: statefulPath(stateful, deployment.basePath),
      body: statefulBody(stateful, deployment.config.deployment),
      askedForUsage: false,
    };
  }
  const apiVersion = deployment.config.apiVersion ?? request.apiVersion ?? DEFAULT_API_VERSION;
  // Azure refuses stream_options on api-versions before it existed: ask for usage only where it is accepted.
  const askedForUsage = request.bodyWithUsage !== undefined && acceptsStreamOptions(apiVersion);
  const path = `${deployment.basePath}/openai/deployments/${encodeURIComponent(deployment.config.deployment)}/${request.operation}?api-version=${encodeURIComponent(apiVersion)}`;
  return { path, body: askedForUsage && request.bodyWithUsage ? request.bodyWithUsage : request.body, askedForUsage };
}
