/**
 * The pieces every operation's prompt collector shares: what a collected prompt is, the fixed
 * costs of the chat rule and of images (prompt-content.ts says where they come from), and the JSON
 * text of structured fields. Apart from prompt-content.ts so that the per-API collectors can use
 * them without an import cycle.
 */

/** Flat image estimates (gpt-4o-era pricing): 85 for detail "low"; 765 is a 1024×1024 image at high detail. */
export const IMAGE_TOKENS_LOW_DETAIL = 85;
export const IMAGE_TOKENS_OTHER = 765;

export const TOKENS_PER_MESSAGE = 3;
export const TOKENS_PER_NAME = 1;
export const TOKENS_TO_PRIME_REPLY = 3;

export interface PromptContent {
  /** Text whose tokens count, to be tokenized or estimated. */
  texts: string[];
  /** Tokens known without looking at text: message overheads, images, token-id arrays. */
  fixedTokens: number;
}

/** The flat cost of one image: only "low" is cheaper; "high", "auto", "original" or none may be large. */
export function imageTokens(detail: unknown): number {
  return detail === 'low' ? IMAGE_TOKENS_LOW_DETAIL : IMAGE_TOKENS_OTHER;
}

export function pushJson(value: unknown, content: PromptContent): void {
  const json = toJson(value);
  if (json !== '') content.texts.push(json);
}

function toJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? '';
  } catch {
    return ''; // cycles or BigInt: impossible from JSON.parse, but the type allows them
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
