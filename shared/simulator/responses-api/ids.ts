/**
 * Ids shaped like Azure's Responses ids: a prefix, then 48 lowercase hex digits. Captures from 2026
 * (`resp_0f2d32831fb00e2e0069d5f8e804808193b3379a80c7a3b172`, `rs_0f2d32831fb00e2e0069d5f8e8e4d4…`,
 * `msg_0f2d32831fb00e2e0069d5f8eb77…`) read as 16 digits shared by a response, its items and its
 * follow-ups, `00`, the creation time in seconds (8 digits), and 22 random digits.
 */
import { randomBytes } from 'node:crypto';

export type IdPrefix = 'resp_' | 'msg_' | 'rs_' | 'fc_' | 'fco_' | 'item_' | 'conv_';

/** 16 hex digits that a response passes on to its items and follow-ups. */
export function newLineage(): string {
  return randomBytes(8).toString('hex');
}

/** The lineage of an id made here (or 16 fresh digits for an id of another shape). */
export function lineageOf(id: string): string {
  const digits = id.slice(id.indexOf('_') + 1, id.indexOf('_') + 17);
  return /^[0-9a-f]{16}$/.test(digits) ? digits : newLineage();
}

export function newId(prefix: IdPrefix, lineage: string): string {
  const seconds = Math.floor(Date.now() / 1000)
    .toString(16)
    .padStart(8, '0')
    .slice(-8);
  return `${prefix}${lineage}00${seconds}${randomBytes(11).toString('hex')}`;
}

/** The id prefix of an item type (the model's output and what a request adds to a conversation). */
export function itemIdPrefix(type: string): IdPrefix {
  switch (type) {
    case 'message':
      return 'msg_';
    case 'reasoning':
      return 'rs_';
    case 'function_call':
      return 'fc_';
    case 'function_call_output':
      return 'fco_';
    default:
      return 'item_';
  }
}
