/** What the Azure surface of one simulator instance (one resource) works with. */
import type { DeploymentRuntime } from './deployments.ts';
import type { ResourceState } from './responses-api/state.ts';

export interface ApiContext {
  deployments: ReadonlyMap<string, DeploymentRuntime>;
  /** The first configured deployment: calls that name no known owner count against it. */
  firstDeployment: DeploymentRuntime;
  apiKeys: ReadonlySet<string>;
  defaultMaxTokens: number;
  /** The Responses and Conversations state of this resource. */
  state: ResourceState;
}
