/**
 * `reasoning.encrypted_content`: a Fernet token (the `gAAAA…` blobs OpenAI and Azure hand out) made
 * with a key of this simulator instance, so only the resource that produced it can read it back,
 * as on Azure, where another resource answers 400 `invalid_encrypted_content`.
 * Token: base64url(0x80 ‖ 8-byte seconds ‖ 16-byte IV ‖ AES-128-CBC(payload) ‖ HMAC-SHA256 of all that).
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export interface ReasoningPayload {
  /** The reasoning item the content belongs to. */
  id: string;
  /** Its reasoning tokens (what the model thought; not billed again as input). */
  tokens: number;
}

export class ReasoningSealer {
  private readonly signingKey = randomBytes(16);
  private readonly encryptionKey = randomBytes(16);

  seal(payload: ReasoningPayload): string {
    const header = Buffer.alloc(9);
    header[0] = 0x80;
    header.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000)), 1);
    const iv = randomBytes(16);
    const cipher = createCipheriv('aes-128-cbc', this.encryptionKey, iv);
    const ciphertext = Buffer.concat([cipher.update(JSON.stringify(payload), 'utf8'), cipher.final()]);
    const signed = Buffer.concat([header, iv, ciphertext]);
    const mac = createHmac('sha256', this.signingKey).update(signed).digest();
    return Buffer.concat([signed, mac]).toString('base64url');
  }

  /** The payload, or null when the token was not made by this instance (or was altered). */
  open(token: string): ReasoningPayload | null {
    let raw: Buffer;
    try {
      raw = Buffer.from(token, 'base64url');
    } catch {
      return null;
    }
    if (raw.length < 9 + 16 + 16 + 32 || raw[0] !== 0x80) return null;
    const signed = raw.subarray(0, raw.length - 32);
    const mac = raw.subarray(raw.length - 32);
    const expected = createHmac('sha256', this.signingKey).update(signed).digest();
    if (!timingSafeEqual(mac, expected)) return null;
    try {
      const decipher = createDecipheriv('aes-128-cbc', this.encryptionKey, signed.subarray(9, 25));
      const plain = Buffer.concat([decipher.update(signed.subarray(25)), decipher.final()]).toString('utf8');
      const payload = JSON.parse(plain) as Partial<ReasoningPayload>;
      if (typeof payload.id !== 'string' || typeof payload.tokens !== 'number') return null;
      return { id: payload.id, tokens: payload.tokens };
    } catch {
      return null;
    }
  }
}
