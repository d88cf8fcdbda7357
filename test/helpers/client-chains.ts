/**
 * For the real-client tests (test/gateway/clients.test.ts). A chain is one conversation of one client
 * through several gateway instances: its `fetch`, handed to the client, sends the chain's n-th
 * request to instance n mod N, as a round-robin load balancer in front of the instances would (the
 * client builds path, query, headers and body as it always does; only the origin changes). Each
 * request carries an `x-request-id` `label:n`, which the gateway forwards upstream, so the checks
 * can ask the simulators (one per Azure resource) where each request of the chain arrived and which
 * ids it named there.
 */
import assert from 'node:assert/strict';
import type { RecordedRequest, Simulator } from '../../shared/simulator/index.ts';

/** One Azure resource: a simulator instance, its deployments, and the deployment id the pools give it. */
export interface Resource {
  id: string;
  sim: Simulator;
  deployments: string[];
}

/** One request of a chain, as the client's fetch saw it. */
export interface Exchange {
  requestId: string;
  method: string;
  /** Path and query, as the client built them. */
  path: string;
  /** The origin of the instance that took it. */
  gateway: string;
  status: number;
  /** `x-gateway-deployment` of the answer: the deployment (here: the resource) that answered. */
  deployment: string | null;
  /** Ids the gateway had handed out before that the request named (in its path or body). */
  named: string[];
}

/** RecordedRequest with what the simulator's Responses API adds to it (absent before it lands). */
type Recorded = RecordedRequest & { method?: string; model?: string | null; references?: readonly string[] };

/** Ids of stored state as they appear in JSON bodies and stream events. */
const ID_FIELD =
  /"(?:id|item_id|response_id|previous_response_id|conversation|conversation_id|first_id|last_id)"\s*:\s*"([a-z]{1,32}_[A-Za-z0-9_-]{1,300})"/g;

export class ClientTraffic {
  /** Every id of stored state an answer of a gateway carried to a client during the file. */
  readonly handedOut = new Set<string>();
  readonly gateways: readonly string[];
  readonly resources: readonly Resource[];
  private readonly labels = new Set<string>();

  constructor(gateways: readonly string[], resources: readonly Resource[]) {
    this.gateways = gateways;
    this.resources = resources;
  }

  chain(label: string): Chain {
    assert.ok(/^[a-z0-9-]+$/.test(label) && !this.labels.has(label), `chain label ${label} is unique`);
    this.labels.add(label);
    return new Chain(label, this.gateways, this.handedOut);
  }

  /** What the resource's simulator recorded of the chain, oldest first. */
  requestsAt(resource: Resource, chain: Chain): Recorded[] {
    return resource.deployments
      .flatMap((deployment) => resource.sim.recentRequests(deployment) as Recorded[])
      .filter((r) => r.clientRequestId?.startsWith(`${chain.label}:`))
      .sort((a, b) => a.at - b.at);
  }

  /**
   * The chain's affinity: the resource that answered its first request answered every request of it
   * (each through another instance), received each of them, and no other resource received any; the
   * ids the requests named reached that resource as its own upstream ids, never as the gateway's.
   * Returns the resource.
   */
  async assertOneResource(chain: Chain): Promise<Resource> {
    await chain.settled();
    const describe = (e: Exchange) => `${e.requestId} ${e.method} ${e.path} via ${e.gateway} → ${e.status} from ${e.deployment}`;
    const first = chain.exchanges[0];
    assert.ok(first, `${chain.label}: the chain sent requests`);
    const owner = this.resources.find((r) => r.id === first.deployment);
    assert.ok(owner, `${chain.label}: the first request was answered by one of the resources (${describe(first)})`);
    for (const exchange of chain.exchanges) {
      assert.equal(exchange.deployment, owner.id, `${chain.label} lives at ${owner.id}, but ${describe(exchange)}`);
    }
    assert.equal(
      new Set(chain.exchanges.map((e) => e.gateway)).size,
      Math.min(this.gateways.length, chain.exchanges.length),
      `${chain.label}: the requests went through every instance`,
    );
    for (const resource of this.resources) {
      const seen = this.requestsAt(resource, chain);
      if (resource !== owner) {
        assert.deepEqual(
          seen.map((r) => `${r.clientRequestId} ${r.method ?? ''} ${r.path} → ${r.status}`),
          [],
          `${chain.label} lives at ${owner.id}: ${resource.id} received none of it`,
        );
        continue;
      }
      const ids = new Set(seen.map((r) => r.clientRequestId));
      for (const exchange of chain.exchanges) assert.ok(ids.has(exchange.requestId), `${owner.id} received ${describe(exchange)}`);
      for (const recorded of seen) {
        const exchange = chain.exchanges.find((e) => e.requestId === recorded.clientRequestId);
        if (!exchange || exchange.named.length === 0) continue;
        const references = recorded.references ?? [];
        assert.ok(
          references.length >= exchange.named.length,
          `${describe(exchange)} named ${exchange.named.join(', ')}; the resource saw references [${references.join(', ')}]`,
        );
      }
    }
    this.assertNoHandedOutIdUpstream();
    return owner;
  }

  /** No id a client got from a gateway reached a simulator: each reached it as the resource's own id. */
  assertNoHandedOutIdUpstream(): void {
    for (const resource of this.resources) {
      for (const deployment of resource.deployments) {
        for (const recorded of resource.sim.recentRequests(deployment) as Recorded[]) {
          for (const reference of recorded.references ?? []) {
            assert.ok(
              !this.handedOut.has(reference),
              `${resource.id}/${deployment} received ${reference}, an id the gateway handed out, in ${recorded.clientRequestId} ${recorded.path}`,
            );
          }
        }
      }
    }
  }
}

export class Chain {
  readonly label: string;
  readonly exchanges: Exchange[] = [];
  private readonly gateways: readonly string[];
  private readonly handedOut: Set<string>;
  private readonly reading: Promise<void>[] = [];

  constructor(label: string, gateways: readonly string[], handedOut: Set<string>) {
    this.label = label;
    this.gateways = gateways;
    this.handedOut = handedOut;
  }

  /** The chain's first instance, for the client's base URL (the fetch picks the instance per request). */
  get baseUrl(): string {
    return this.gateways[0]!;
  }

  /** A fetch for the client: request n to instance n mod N, labelled, recorded. */
  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    assert.ok(!(input instanceof Request), 'the clients call fetch with a URL and init');
    await this.settled(1000);
    const n = this.exchanges.length;
    const gateway = new URL(this.gateways[n % this.gateways.length]!);
    const target = new URL(String(input));
    target.protocol = gateway.protocol;
    target.host = gateway.host;
    const headers = new Headers(init?.headers);
    const requestId = `${this.label}:${n + 1}`;
    headers.set('x-request-id', requestId);
    const sent = `${target.pathname}${target.search} ${typeof init?.body === 'string' ? init.body : ''}`;
    const exchange: Exchange = {
      requestId,
      method: (init?.method ?? 'GET').toUpperCase(),
      path: `${target.pathname}${target.search}`,
      gateway: gateway.origin,
      status: 0,
      deployment: null,
      named: [...this.handedOut].filter((id) => sent.includes(id)),
    };
    this.exchanges.push(exchange);
    const response = await fetch(target, { ...init, headers });
    exchange.status = response.status;
    exchange.deployment = response.headers.get('x-gateway-deployment');
    // The client reads the answer; a copy of it is read here for the ids it hands out.
    this.reading.push(
      response
        .clone()
        .text()
        .then(
          (text) => {
            for (const match of text.matchAll(ID_FIELD)) this.handedOut.add(match[1]!);
          },
          () => undefined,
        ),
    );
    return response;
  };

  /** Waits (at most `ms`) until every answer of the chain so far was read for its ids. */
  async settled(ms = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.reading), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
  }

  /** A one-line account of the chain, for failure messages. */
  toString(): string {
    return this.exchanges.map((e) => `${e.requestId} ${e.method} ${e.path} → ${e.status} ${e.deployment}`).join('; ');
  }
}
