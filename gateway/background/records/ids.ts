/**
 * Ids the Batch API hands out, shaped as OpenAI's (`file-…`, `batch_…`, `batch_req_…`), random and
 * unguessable (a client only ever sees its own objects, but an id must not tell it about others').
 * Ids in paths and parameters are checked against these shapes before anything is looked up.
 */
import { randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** `length` characters of [A-Za-z0-9] (rejection sampling: no character more likely than another). */
function randomText(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

export const newFileId = (): string => `file-${randomText(24)}`;
export const newBatchId = (): string => `batch_${randomText(24)}`;
export const newResultId = (): string => `batch_req_${randomText(24)}`;

const FILE_ID = /^file-[A-Za-z0-9]{1,64}$/;
const BATCH_ID = /^batch_[A-Za-z0-9]{1,64}$/;

export const isFileId = (id: string): boolean => FILE_ID.test(id);
export const isBatchId = (id: string): boolean => BATCH_ID.test(id);
