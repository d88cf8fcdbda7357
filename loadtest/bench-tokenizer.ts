/**
 * Benchmark of request-path token counting (shared/tokens) and calibration of its char estimate.
 *
 *   node_modules/.bin/node loadtest/bench-tokenizer.ts
 *
 * Prints:
 * 1. setup cost and memory of js-tiktoken vs our exact counter;
 * 2. ms per call and tokens/s for 1 KB–1 MB of realistic text, per encoding, for js-tiktoken,
 *    our exact counter and the char estimate;
 * 3. hostile or unusual text at the default threshold;
 * 3b. how often realistic prompts at the threshold stay within the merge cap;
 * 4. merge cost per byte;
 * 5. chars/token per corpus and the char estimate's error;
 * 6. the size at which exact counting costs 1 ms (the basis of DEFAULT_EXACT_UP_TO_CHARS);
 * 7. estimateRequest end to end on chat bodies of 1 KB to 1 MB.
 *
 * Every cell is bounded: at most MAX_ITERATIONS calls and CELL_TIME_CAP_MS of wall time (at least
 * one call). The whole run takes about a minute.
 *
 * Corpora come from installed packages, so any checkout can reproduce the numbers:
 * - English prose: the doc comments of @types/node, plus TypeScript's third-party license notices.
 * - Markdown: READMEs of the dependencies (prose with code samples).
 * - Code: the openai SDK and zod TypeScript sources, Express and yaml JavaScript.
 * - Other languages: TypeScript's translated compiler messages.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { getEncoding } from 'js-tiktoken';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import { BytePairTokenCounter } from '../shared/tokens/byte-pair-counter.ts';
import { CHARS_PER_TOKEN, estimateTokensFromChars, TOKENS_PER_EXTRA_UTF8_BYTE } from '../shared/tokens/char-estimate.ts';
import type { Encoding } from '../shared/tokens/encoding-for-model.ts';
import { DEFAULT_EXACT_UP_TO_CHARS, estimateRequest, MERGE_BYTES_PER_EXACT_CHAR } from '../shared/tokens/estimate-request.ts';

const MAX_ITERATIONS = 50;
const CELL_TIME_CAP_MS = 2_000;
const ENCODINGS: readonly Encoding[] = ['o200k_base', 'cl100k_base'];
const SIZES = [1_024, 10_240, 102_400, 1_048_576];
const CORPUS_CAP_CHARS = 400_000;
const MAX_MERGE_BYTES = DEFAULT_EXACT_UP_TO_CHARS * MERGE_BYTES_PER_EXACT_CHAR;

const require = createRequire(import.meta.url);
/** Where an installed package lives (not every package exports its package.json, so search the node_modules paths). */
function packageDir(name: string): string {
  for (const modules of require.resolve.paths(name) ?? []) {
    const candidate = path.join(modules, name);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
  }
  return path.join('node_modules', name);
}

// ---------------------------------------------------------------- corpora

function readPackageFile(pkg: string, file: string): string {
  try {
    return readFileSync(path.join(packageDir(pkg), file), 'utf8');
  } catch {
    return '';
  }
}

function readTree(pkg: string, dir: string, extension: string, capChars: number): string {
  const root = path.join(packageDir(pkg), dir);
  const files: string[] = [];
  const walk = (folder: string): void => {
    for (const entry of readdirSync(folder).sort()) {
      const full = path.join(folder, entry);
      if (statSync(full).isDirectory()) walk(full);
      else if (entry.endsWith(extension) && !entry.endsWith('.d.ts')) files.push(full);
    }
  };
  try {
    walk(root);
  } catch {
    return '';
  }
  let text = '';
  for (const file of files) {
    if (text.length >= capChars) break;
    text += readFileSync(file, 'utf8') + '\n';
  }
  return text.slice(0, capChars);
}

/** Prose paragraphs of JSDoc comments: comment lines outside code fences, tags dropped. */
function docCommentProse(source: string): string {
  const lines: string[] = [];
  let inFence = false;
  for (const line of source.split('\n')) {
    const match = /^\s*\* ?(.*)$/.exec(line);
    if (match === null) continue;
    const text = match[1] ?? '';
    if (text.startsWith('```')) {
      inFence = !inFence;
      continue;
    }
    if (!inFence && !text.startsWith('@') && text.trim() !== '' && text.trim() !== '/') lines.push(text);
  }
  return lines.join('\n');
}

function nodeDocProse(capChars: number): string {
  const dir = packageDir('@types/node');
  let text = '';
  for (const file of readdirSync(dir).sort()) {
    if (!file.endsWith('.d.ts')) continue;
    text += docCommentProse(readFileSync(path.join(dir, file), 'utf8')) + '\n';
    if (text.length >= capChars) break;
  }
  return text.slice(0, capChars);
}

function translatedMessages(language: string): string {
  const json = readPackageFile('typescript', `lib/${language}/diagnosticMessages.generated.json`);
  if (json === '') return '';
  return Object.values(JSON.parse(json) as Record<string, string>).join('\n');
}

interface Corpus {
  name: string;
  kind: 'english' | 'markdown' | 'code' | 'other language';
  text: string;
}

function loadCorpora(): Corpus[] {
  const readmes = ['openai', 'ioredis', 'winston', 'opossum', 'zod', 'prom-client', 'http-proxy-middleware', 'eslint']
    .map((pkg) => readPackageFile(pkg, 'README.md'))
    .join('\n');
  const corpora: Corpus[] = [
    { name: 'node API docs', kind: 'english', text: nodeDocProse(CORPUS_CAP_CHARS) },
    { name: 'license notices', kind: 'english', text: readPackageFile('typescript', 'ThirdPartyNoticeText.txt') },
    { name: 'READMEs', kind: 'markdown', text: readmes.slice(0, CORPUS_CAP_CHARS) },
    { name: 'openai SDK (TS)', kind: 'code', text: readTree('openai', 'src', '.ts', CORPUS_CAP_CHARS) },
    { name: 'zod (TS)', kind: 'code', text: readTree('zod', 'src', '.ts', CORPUS_CAP_CHARS) },
    { name: 'express (JS)', kind: 'code', text: readTree('express', 'lib', '.js', CORPUS_CAP_CHARS) },
    { name: 'yaml (JS)', kind: 'code', text: readTree('yaml', 'dist', '.js', CORPUS_CAP_CHARS) },
  ];
  for (const language of ['de', 'fr', 'ru', 'ja', 'zh-cn', 'ko']) {
    corpora.push({ name: `tsc messages ${language}`, kind: 'other language', text: translatedMessages(language) });
  }
  return corpora.filter((corpus) => corpus.text.length > 0);
}

/** English, markdown and code interleaved in 8 KB blocks: what a mixed stream of prompts looks like. */
function mixedText(corpora: readonly Corpus[], minChars: number): string {
  const sources = corpora.filter((corpus) => corpus.kind !== 'other language').map((corpus) => corpus.text);
  const block = 8_192;
  let text = '';
  for (let offset = 0; text.length < minChars; offset += block) {
    for (const source of sources) text += source.slice(offset % source.length, (offset % source.length) + block);
  }
  return text;
}

// ---------------------------------------------------------------- measuring

interface Timing {
  msPerCall: number;
  calls: number;
}

/** Median ms per call of fn(iteration), bounded by MAX_ITERATIONS and CELL_TIME_CAP_MS. */
function measure(fn: (iteration: number) => unknown, maxIterations = MAX_ITERATIONS): Timing {
  fn(-1); // warm-up (JIT), not timed
  const samples: number[] = [];
  const started = performance.now();
  for (let iteration = 0; iteration < maxIterations; iteration++) {
    const before = performance.now();
    fn(iteration);
    samples.push(performance.now() - before);
    if (performance.now() - started > CELL_TIME_CAP_MS) break;
  }
  samples.sort((a, b) => a - b);
  return { msPerCall: samples[Math.floor(samples.length / 2)] ?? NaN, calls: samples.length };
}

const kb = (chars: number): string => (chars >= 1_048_576 ? `${chars / 1_048_576} MB` : `${Math.round(chars / 1_024)} KB`);
const fixed = (value: number, digits: number): string => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const perSecond = (count: number, ms: number): string => {
  const rate = (count / ms) * 1_000;
  return rate >= 1e6 ? `${(rate / 1e6).toFixed(2)} M` : `${(rate / 1e3).toFixed(0)} k`;
};
const percent = (estimate: number, exact: number): string =>
  `${estimate >= exact ? '+' : ''}${(((estimate - exact) / exact) * 100).toFixed(1)}%`;

function printTable(title: string, header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((cell, column) => Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    '| ' +
    cells.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join(' | ') +
    ' |';
  console.log(`\n${title}\n`);
  console.log(line(header));
  console.log(
    '|' + widths.map((width, column) => (column === 0 ? '-'.repeat(width + 1) + '-' : '-'.repeat(width + 1) + ':')).join('|') + '|',
  );
  for (const row of rows) console.log(line(row));
}

// ---------------------------------------------------------------- the run

const VOCABULARIES = { o200k_base: o200kBase, cl100k_base: cl100kBase } as const;
const corpora = loadCorpora();
const mixed = mixedText(corpora, 2 * SIZES[SIZES.length - 1]!);
/** A different slice per iteration, so the counter's piece cache sees fresh text as it would in service. */
const windowOf = (size: number, iteration: number): string => {
  const offset = Math.abs(iteration * 104_729) % (mixed.length - size);
  return mixed.slice(offset, offset + size);
};

console.log(`Node ${process.version}, ${process.arch}; ${corpora.length} corpora, mixed text ${(mixed.length / 1_048_576).toFixed(1)} MB`);

// 1. setup
const reference = new Map<Encoding, ReturnType<typeof getEncoding>>();
const exact = new Map<Encoding, BytePairTokenCounter>();
const setupRows: string[][] = [];
for (const encoding of ENCODINGS) {
  const heapBefore = process.memoryUsage().heapUsed;
  let started = performance.now();
  exact.set(encoding, new BytePairTokenCounter(VOCABULARIES[encoding]));
  const oursMs = performance.now() - started;
  const oursMb = (process.memoryUsage().heapUsed - heapBefore) / 1e6;
  started = performance.now();
  reference.set(encoding, getEncoding(encoding));
  const theirsMs = performance.now() - started;
  setupRows.push([encoding, fixed(theirsMs, 0), fixed(oursMs, 0), fixed(oursMb, 0)]);
}
printTable(
  '1. Setup (synchronous; done once per process, ideally at startup)',
  ['encoding', 'js-tiktoken build ms', 'exact counter build ms', 'exact counter heap MB (approx)'],
  setupRows,
);

// 2. throughput
const throughputRows: string[][] = [];
const msPerCharAt = new Map<Encoding, Map<number, number>>();
for (const encoding of ENCODINGS) {
  const counter = exact.get(encoding)!;
  const tiktoken = reference.get(encoding)!;
  msPerCharAt.set(encoding, new Map());
  for (const size of SIZES) {
    const sample = windowOf(size, 0);
    const tokens = counter.count(sample);
    const theirs = measure((i) => tiktoken.encode(windowOf(size, i), [], []).length, size >= 102_400 ? 5 : MAX_ITERATIONS);
    const ours = measure((i) => counter.count(windowOf(size, i)));
    const chars = measure((i) => estimateTokensFromChars([windowOf(size, i)], encoding));
    msPerCharAt.get(encoding)!.set(size, ours.msPerCall / size);
    throughputRows.push([
      `${encoding} ${kb(size)}`,
      String(tokens),
      fixed(theirs.msPerCall, 3),
      perSecond(tokens, theirs.msPerCall),
      fixed(ours.msPerCall, 3),
      perSecond(tokens, ours.msPerCall),
      fixed(size / ours.msPerCall / 1_000, 1),
      fixed(chars.msPerCall, 4),
    ]);
  }
}
printTable(
  '2. Realistic mixed text (English prose, markdown, code); median of up to 50 calls, each on a different slice',
  ['text', 'tokens', 'js-tiktoken ms', 'js-tiktoken tok/s', 'exact ms', 'exact tok/s', 'exact MB/s', 'char estimate ms'],
  throughputRows,
);

// 3. hostile or unusual text
/** mulberry32: a small seeded PRNG, so every run measures the same "random" text. */
let seed = 42;
const random = (): number => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
};
const randomLetters = (length: number): string =>
  Array.from({ length }, () => String.fromCharCode(97 + Math.floor(random() * 26))).join('');
const randomWords = (wordLength: number, total: number): string => {
  let text = '';
  while (text.length < total) text += randomLetters(wordLength) + ' ';
  return text.slice(0, total);
};
/** Text of a given size; `variant` picks different text of the same kind, so caches do not flatter repeats. */
type TextMaker = (size: number, variant: number) => string;
const sliceOf = (source: string, size: number, variant: number): string => {
  const offset = source.length > size ? (variant * 7_919) % (source.length - size) : 0;
  return source.slice(offset, offset + size);
};
const chineseMessages = translatedMessages('zh-cn');
const russianMessages = translatedMessages('ru');
const hostile: [string, TextMaker][] = [
  ['spaces', (size) => ' '.repeat(size)],
  ['one letter repeated', (size) => 'a'.repeat(size)],
  ['random lowercase, no spaces', (size) => randomLetters(size)],
  ['random 8-letter words', (size) => randomWords(8, size)],
  ['Chinese, no punctuation', (size, variant) => sliceOf('我们今天去公园散步天气很好'.repeat(Math.ceil(size / 13) + 20), size, variant)],
  ['Chinese messages (tsc zh-cn)', (size, variant) => sliceOf(chineseMessages, size, variant)],
  ['Russian messages (tsc ru)', (size, variant) => sliceOf(russianMessages, size, variant)],
  ['emoji', (size, variant) => sliceOf('😀🚀🎉'.repeat(Math.ceil(size / 6) + 20), size, variant * 2)],
  [
    'base64',
    (size) =>
      Buffer.from(Array.from({ length: size }, () => Math.floor(random() * 256)))
        .toString('base64')
        .slice(0, size),
  ],
];
const hostileRows: string[][] = [];
// The role "user" counts too: stay just inside the threshold so that only merge work decides the method.
const hostileSize = DEFAULT_EXACT_UP_TO_CHARS - 'user'.length;
const HOSTILE_VARIANTS = 11;
for (const [name, make] of hostile) {
  const small = make(1_024, 0);
  const large = Array.from({ length: HOSTILE_VARIANTS }, (_, variant) => make(hostileSize, variant));
  const bodies = large.map((content) => ({ messages: [{ role: 'user', content }] }));
  const options = { encoding: 'o200k_base', defaultMaxTokens: 0 } as const;
  const firstMethod = estimateRequest('chat/completions', bodies[0], options).method; // cold: no earlier call saw this text
  const theirsSmall = measure(() => reference.get('o200k_base')!.encode(small, [], []), 3);
  const oursLarge = measure((i) => exact.get('o200k_base')!.count(large[(i + 1) % HOSTILE_VARIANTS]!), HOSTILE_VARIANTS - 1);
  const bounded = measure((i) => estimateRequest('chat/completions', bodies[(i + 1) % HOSTILE_VARIANTS], options), HOSTILE_VARIANTS - 1);
  hostileRows.push([name, fixed(theirsSmall.msPerCall, 2), fixed(oursLarge.msPerCall, 2), fixed(bounded.msPerCall, 2), firstMethod]);
}
printTable(
  `3. Hostile or unusual text, o200k; estimateRequest caps merge work at ${MAX_MERGE_BYTES} bytes (a different text of each kind per call)`,
  ['text', 'js-tiktoken 1 KB ms', `exact ${kb(hostileSize)} ms (no cap)`, `estimateRequest ${kb(hostileSize)} ms`, 'method (first call)'],
  hostileRows,
);

// 3b. how often realistic prompts at the threshold stay within a merge cap, with the piece cache
// filling as it would in service: one fresh counter per cap, fed the same sequence of prompts.
const MERGE_CAPS = [512, 1_024, 2_048, 4_096];
const PROMPTS_PER_CAP = 200;
const capRows: string[][] = [];
const atThreshold = DEFAULT_EXACT_UP_TO_CHARS - 'user'.length;
for (const encoding of ENCODINGS) {
  const shares = MERGE_CAPS.map((cap) => {
    const counter = new BytePairTokenCounter(VOCABULARIES[encoding]);
    let exactCount = 0;
    for (let i = 0; i < PROMPTS_PER_CAP; i++) {
      if (counter.countWithin([windowOf(atThreshold, i * 7 + 1)], cap) !== undefined) exactCount++;
    }
    return `${((exactCount / PROMPTS_PER_CAP) * 100).toFixed(0)}%`;
  });
  capRows.push([encoding, ...shares]);
}
printTable(
  `3b. Share of ${PROMPTS_PER_CAP} mixed-text prompts of ${kb(atThreshold)} counted exactly, by merge cap in bytes (MAX_MERGE_BYTES = ${MAX_MERGE_BYTES})`,
  ['encoding', ...MERGE_CAPS.map(String)],
  capRows,
);

// 4. merge cost per byte: pieces that are not whole tokens (random letters) of a given length
const mergeRows: string[][] = [];
for (const wordLength of [8, 24, 47, 64, 200, 2_000]) {
  const texts = Array.from({ length: 12 }, () => randomWords(wordLength, 32_768));
  const timing = measure((i) => exact.get('o200k_base')!.count(texts[Math.max(0, i) % texts.length]!), 11);
  mergeRows.push([`${wordLength} letters`, wordLength <= 48 ? 'linear' : 'heap', fixed((timing.msPerCall * 1_000) / 32_768, 3)]);
}
printTable(
  '4. Merge cost, o200k: random lowercase words (no word is cached or a whole token)',
  ['word length', 'merge', 'µs per byte'],
  mergeRows,
);

// 5. calibration
const calibrationRows: string[][] = [];
const exactTokens = new Map<string, number>(); // `${encoding} ${corpus name}` → tokens
const kindTotals = new Map<string, { chars: number; tokens: number }>();
for (const encoding of ENCODINGS) {
  for (const corpus of corpora) {
    // The exact counter, not js-tiktoken, only for speed: test/tokens-parity.test.ts checks they agree.
    const tokens = exact.get(encoding)!.count(corpus.text);
    exactTokens.set(`${encoding} ${corpus.name}`, tokens);
    const estimate = estimateTokensFromChars([corpus.text], encoding);
    const key = `${encoding} ${corpus.kind}`;
    const total = kindTotals.get(key) ?? { chars: 0, tokens: 0 };
    kindTotals.set(key, { chars: total.chars + corpus.text.length, tokens: total.tokens + tokens });
    calibrationRows.push([
      `${encoding} ${corpus.name}`,
      corpus.kind,
      String(corpus.text.length),
      String(tokens),
      fixed(corpus.text.length / tokens, 2),
      percent(estimate, tokens),
    ]);
  }
}
printTable(
  '5. Calibration: chars per token and the char estimate error',
  ['corpus', 'kind', 'chars', 'tokens', 'chars/token', 'char estimate error'],
  calibrationRows,
);
console.log('');
for (const encoding of ENCODINGS) {
  const ratio = (kind: string): number => {
    const total = kindTotals.get(`${encoding} ${kind}`);
    return total === undefined ? NaN : total.chars / total.tokens;
  };
  const english = ratio('english');
  const code = ratio('code');
  // The mean of the two ratios is the one that errs by the same fraction on pure English and on pure code
  // (over- on one, under- on the other), and it is exact for a prompt that is half English, half code by tokens.
  const blend = (english + code) / 2;
  const otherLanguages = corpora.filter((corpus) => corpus.kind === 'other language');
  const worstError = (weight: number): number =>
    Math.max(
      ...otherLanguages.map((corpus) => {
        const extra = Buffer.byteLength(corpus.text, 'utf8') - corpus.text.length;
        const estimate = corpus.text.length / blend + extra * weight;
        return Math.abs(estimate / exactTokens.get(`${encoding} ${corpus.name}`)! - 1);
      }),
    );
  let bestWeight = 0;
  for (let weight = 0; weight <= 1; weight += 0.01) if (worstError(weight) < worstError(bestWeight)) bestWeight = weight;
  console.log(
    `${encoding}: tokens per extra UTF-8 byte with the fewest worst-case error over the other languages: ` +
      `${bestWeight.toFixed(2)} (±${(worstError(bestWeight) * 100).toFixed(0)}%); ` +
      `TOKENS_PER_EXTRA_UTF8_BYTE in char-estimate.ts: ${TOKENS_PER_EXTRA_UTF8_BYTE[encoding]}`,
  );
  console.log(
    `${encoding}: English ${fixed(english, 2)}, markdown ${fixed(ratio('markdown'), 2)}, code ${fixed(code, 2)} chars/token; ` +
      `blend ${fixed(blend, 2)} (CHARS_PER_TOKEN in char-estimate.ts: ${CHARS_PER_TOKEN[encoding]})`,
  );
}

// 6. threshold
console.log('');
for (const encoding of ENCODINGS) {
  const perChar = msPerCharAt.get(encoding)!.get(10_240)!;
  console.log(
    `${encoding}: exact counting of mixed text costs ${fixed(perChar * 1_024 * 1_000, 0)} µs per KB at 10 KB, ` +
      `so 1 ms ≈ ${(1 / perChar / 1_024).toFixed(1)} KB; DEFAULT_EXACT_UP_TO_CHARS = ${DEFAULT_EXACT_UP_TO_CHARS}`,
  );
}

// 7. end to end
const chatBody = (chars: number) => ({
  messages: [
    { role: 'system', content: windowOf(Math.floor(chars / 2), 3) },
    { role: 'user', content: windowOf(Math.ceil(chars / 2), 5) },
  ],
  max_tokens: 500,
});
const endToEndRows: string[][] = [];
// The role names count too: 16 chars below the threshold keeps the whole body inside it.
for (const chars of [1_024, 4_096, DEFAULT_EXACT_UP_TO_CHARS - 16, DEFAULT_EXACT_UP_TO_CHARS + 1_024, 102_400, 1_048_576]) {
  const body = chatBody(chars);
  const timing = measure(() => estimateRequest('chat/completions', body, { encoding: 'o200k_base', defaultMaxTokens: 0 }));
  const estimate = estimateRequest('chat/completions', body, { encoding: 'o200k_base', defaultMaxTokens: 0 });
  endToEndRows.push([kb(chars), fixed(timing.msPerCall, 3), estimate.method, String(estimate.promptTokens)]);
}
printTable(
  '7. estimateRequest on a chat body (system + user message), o200k, default threshold',
  ['prompt', 'ms per call', 'method', 'prompt tokens'],
  endToEndRows,
);
