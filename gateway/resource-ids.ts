/**
 * Ids of state that lives in one Azure resource (responses, their items, conversations), as the
 * gateway hands them out: the upstream id with a tag of the resource that holds it, so any instance
 * can send a follow-up there without a look-up and without shared state (docs/responses.md argues
 * the choice). `resp_68af…` from a resource tagged `3fa94c2e01` reaches the client as
 * `resp_sw13fa94c2e0168af…`: the prefix stays (clients and logs read it), `sw1` marks the format and
 * its version, the tag is 10 hex digits of SHA-256 of the resource's origin and base path.
 *
 * Reasoning items' `encrypted_content` is just as tied to its resource: it is handed out as
 * `sw1{tag}.{content}`, and an item the client sends back with it pins the request as an id does.
 *
 * Azure's ids are hex after their prefix, so no id Azure issues starts with `sw1`; an id of another
 * shape that happened to would need one of our tags as well to be taken for ours.
 */
import { createHash } from 'node:crypto';

const MARKER = 'sw1';
const TAG_LENGTH = 10;
const TAG = /^[0-9a-f]{10}$/;
/**
 * JSON fields whose string value is an id of stored state, at any depth: the rewriter tags them on
 * the way out, the request's restorer (http/stateful-request.ts) reads them on the way in (input
 * items carry theirs as `id`; a conversation is named by `conversation` or its `id`).
 */
export const ID_FIELDS = ['id', 'item_id', 'response_id', 'previous_response_id', 'first_id', 'last_id', 'conversation'] as const;

/** What an upstream id looks like: a lower-case prefix, `_`, then letters and digits. */
const UPSTREAM_ID = /^[a-z]{1,32}_[A-Za-z0-9]{1,200}$/;

/** The resource a deployment's endpoint names: origin and base path, case-folded (Azure's host names are). */
export function resourceTagOf(endpoint: string): string {
  const url = new URL(endpoint);
  const key = `${url.origin}${url.pathname.replace(/\/+$/, '')}`.toLowerCase();
  return createHash('sha256').update(key).digest('hex').slice(0, TAG_LENGTH);
}

/** True for a string shaped like an id Azure issued (and not one of ours already). */
export function isUpstreamId(value: string): boolean {
  return UPSTREAM_ID.test(value) && decodeId(value) === undefined;
}

/** The id as the client sees it: the upstream id carrying the tag of the resource that holds it. */
export function encodeId(upstreamId: string, tag: string): string {
  const underscore = upstreamId.indexOf('_');
  return `${upstreamId.slice(0, underscore + 1)}${MARKER}${tag}${upstreamId.slice(underscore + 1)}`;
}

/** The resource tag and upstream id of an id the gateway handed out; undefined for any other string. */
export function decodeId(id: string): { tag: string; upstreamId: string } | undefined {
  const underscore = id.indexOf('_');
  if (underscore <= 0 || !id.startsWith(MARKER, underscore + 1)) return undefined;
  const tagAt = underscore + 1 + MARKER.length;
  const tag = id.slice(tagAt, tagAt + TAG_LENGTH);
  const rest = id.slice(tagAt + TAG_LENGTH);
  if (!TAG.test(tag) || rest.length === 0) return undefined;
  return { tag, upstreamId: id.slice(0, underscore + 1) + rest };
}

/** Opaque state (`encrypted_content`) as the client sees it: prefixed with the resource's tag. */
export function encodeOpaque(content: string, tag: string): string {
  return `${MARKER}${tag}.${content}`;
}

/** The resource tag and upstream content of opaque state the gateway handed out; undefined for anything else. */
export function decodeOpaque(value: string): { tag: string; upstream: string } | undefined {
  if (!value.startsWith(MARKER) || value.charAt(MARKER.length + TAG_LENGTH) !== '.') return undefined;
  const tag = value.slice(MARKER.length, MARKER.length + TAG_LENGTH);
  return TAG.test(tag) ? { tag, upstream: value.slice(MARKER.length + TAG_LENGTH + 1) } : undefined;
}
