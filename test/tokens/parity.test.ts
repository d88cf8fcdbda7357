/**
 * The exact counter in shared/tokens must give the same count as js-tiktoken 1.0.21
 * (`getEncoding(encoding).encode(text, [], []).length`, i.e. special-token text as plain text)
 * on every kind of input: prose, code, other scripts, long runs that take the heap merge path,
 * the boundary between the two merge paths, and random Unicode including lone surrogates.
 * Building js-tiktoken's encoders takes about 2 s; the rest about 1 s.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { getEncoding } from 'js-tiktoken';
import { BytePairTokenCounter, utf8ByteString } from '../../shared/tokens/byte-pair-counter.ts';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';

const ENCODINGS = [
  ['o200k_base', o200kBase],
  ['cl100k_base', cl100kBase],
] as const;

const fromPackages = (file: string): string => readFileSync(new URL(`../../node_modules/${file}`, import.meta.url), 'utf8');

/** mulberry32: seeded, so a failure reproduces. */
function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function randomUnicodeStrings(count: number): string[] {
  const random = seededRandom(20_240_601);
  const strings: string[] = [];
  for (let i = 0; i < count; i++) {
    let text = '';
    const length = Math.floor(random() * 120);
    for (let j = 0; j < length; j++) {
      const roll = random();
      if (roll < 0.35)
        text += String.fromCharCode(32 + Math.floor(random() * 95)); // printable ASCII
      else if (roll < 0.5) text += ' ';
      else if (roll < 0.57) text += random() < 0.5 ? '\n' : '\r\n';
      else if (roll < 0.8)
        text += String.fromCodePoint(0x80 + Math.floor(random() * 0x2f80)); // Latin-1 to CJK symbols
      else if (roll < 0.9)
        text += String.fromCodePoint(0x4e00 + Math.floor(random() * 0x5000)); // CJK ideographs
      else text += String.fromCodePoint(Math.floor(random() * 0x110000)); // anything, lone surrogates included
    }
    strings.push(text);
  }
  return strings;
}

function samples(): [string, string][] {
  const random = seededRandom(7);
  const letters = (n: number): string => Array.from({ length: n }, () => String.fromCharCode(97 + Math.floor(random() * 26))).join('');
  const cases: [string, string][] = [
    ['empty', ''],
    ['English prose', fromPackages('typescript/ThirdPartyNoticeText.txt').slice(0, 12_000)],
    ['markdown', fromPackages('openai/README.md').slice(0, 12_000)],
    ['TypeScript', fromPackages('typescript/lib/lib.es5.d.ts').slice(20_000, 32_000)],
    ['special-token text', 'a <|endoftext|> b <|endofprompt|> c <|fim_prefix|><|im_start|>'],
    ['contractions and case', "I'm sure they'll say it's JSONParser's fault, DON'T YOU THINK? HTTPServer's XMLHttpRequest"],
    ['numbers', '3.14159 1234567890 0xFF 1e-9 ١٢٣ 12,345,678'],
    ['whitespace mix', 'a  b\t\tc \n\n  d\r\n\r\n   e    \n \n f'],
    ['URLs and paths', 'https://example.com/a/b?c=d&e=f#g C:\\Users\\me\\file.txt ./src/**/*.ts'],
    ['emoji and ZWJ', '👩‍👩‍👧‍👦 🇩🇪 ✊🏽 😀😀😀'],
    ['lone surrogates', '\ud800 a \udc00 b \ud83d'],
    ['combining marks', 'e\u0301 n\u0303 a\u0308\u0308\u0308'],
    ['spaces 300 (heap)', ' '.repeat(300)],
    ['one letter 300 (heap)', 'a'.repeat(300)],
    ['dashes 200 (heap)', '-'.repeat(200)],
    ['newlines 200', '\n'.repeat(200)],
    ['Chinese run 100 (heap)', '我们今天去公园散步天气很好'.repeat(8).slice(0, 100)],
    ['emoji run 50 (heap)', '😀'.repeat(50)],
    ['random letters at the merge-path boundary', [47, 48, 49, 50, 63, 64, 65, 120].map(letters).join(' ')],
  ];
  for (const language of ['ru', 'ja', 'zh-cn', 'ko', 'de']) {
    const messages = Object.values(
      JSON.parse(fromPackages(`typescript/lib/${language}/diagnosticMessages.generated.json`)) as Record<string, string>,
    );
    cases.push([`tsc messages ${language}`, messages.slice(0, 150).join('\n')]);
  }
  return cases;
}

for (const [encoding, vocabulary] of ENCODINGS) {
  test(`${encoding}: same counts as js-tiktoken`, () => {
    const reference = getEncoding(encoding);
    const counter = new BytePairTokenCounter(vocabulary);
    const cases = samples();
    const expected = cases.map(([, text]) => reference.encode(text, [], []).length);
    cases.forEach(([name, text], index) => assert.equal(counter.count(text), expected[index], name));
    for (const [index, text] of randomUnicodeStrings(300).entries()) {
      assert.equal(counter.count(text), reference.encode(text, [], []).length, `random string ${index}: ${JSON.stringify(text)}`);
    }
    // A second pass is served partly from the piece cache and must not change anything.
    cases.forEach(([name, text], index) => assert.equal(counter.count(text), expected[index], `${name} (cached)`));
  });
}

test('countWithin sums several texts and gives up once merging exceeds the cap', () => {
  const counter = new BytePairTokenCounter(o200kBase);
  assert.equal(counter.countWithin(['hello world', 'Say this is a test'], Number.POSITIVE_INFINITY), 2 + 5);
  assert.equal(counter.countWithin([' '.repeat(300)], 299), undefined, 'a 300-byte piece needs 300 bytes of merging');
  assert.equal(counter.countWithin([' '.repeat(300)], 300), counter.count(' '.repeat(300)));
  assert.equal(counter.countWithin(['hello world'], 0), 2, 'whole-token pieces need no merging');
});

test('utf8ByteString matches TextEncoder, short and long, lone surrogates included', () => {
  const encoder = new TextEncoder();
  const latin1 = (bytes: Uint8Array): string => Array.from(bytes, (byte) => String.fromCharCode(byte)).join('');
  for (const text of [
    'plain',
    'Größe',
    'Привет',
    '我们',
    '😀x',
    '\ud800',
    'a\udc00b',
    '\ud83d\ude00',
    'é'.repeat(100),
    '\ud800'.repeat(70) + '😀',
  ]) {
    assert.equal(utf8ByteString(text), latin1(encoder.encode(text)), JSON.stringify(text));
  }
});
