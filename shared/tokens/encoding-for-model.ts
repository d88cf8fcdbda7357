/**
 * Which BPE vocabulary a model uses. Source: openai/tiktoken `tiktoken/model.py` (see the
 * reference notes, section 7). Azure deployments report model names such as `gpt-35-turbo-16k`
 * or `gpt-4o-2024-08-06`, so matching is by family prefix rather than by exact name.
 */
export type Encoding = 'o200k_base' | 'cl100k_base';

/** Families still on the GPT-4-era vocabulary. Everything newer (gpt-4o, 4.1, 4.5, 5, o-series) is o200k. */
const CL100K_FAMILIES: readonly RegExp[] = [
  /^gpt-4(?:-|$)/, // gpt-4, gpt-4-32k, gpt-4-turbo, gpt-4-0613, gpt-4-vision-preview; not gpt-4o / gpt-4.1 / gpt-4.5
  /^gpt-3\.?5-turbo/, // OpenAI's gpt-3.5-turbo* and Azure's gpt-35-turbo*
  /^text-embedding-(?:ada-002|3-)/,
  /^(?:davinci|babbage)-002$/, // legacy completions models (tiktoken model.py: cl100k_base)
];

/**
 * o200k_base for gpt-4o, 4.1, 4.5, 5, o1/o3/o4 (incl. -mini etc.); cl100k_base for gpt-4, gpt-4-32k,
 * gpt-4-turbo, gpt-35-turbo / gpt-3.5-turbo, text-embedding-ada-002, text-embedding-3-*;
 * unknown → o200k_base (the vocabulary of every model family released since 2024).
 */
export function encodingForModel(model: string): Encoding {
  if (typeof model !== 'string') return 'o200k_base';
  // Tolerate case differences and provider prefixes such as "azure/gpt-4".
  const name = model.trim().toLowerCase().replace(/^.*\//, '');
  return CL100K_FAMILIES.some((family) => family.test(name)) ? 'cl100k_base' : 'o200k_base';
}
