/**
 * The simulator's token counts against js-tiktoken itself: prompt counts must be exact (the
 * counter reimplements js-tiktoken's BPE for speed), and the generated words must be one token
 * each so that usage.completion_tokens is the true token count of the text.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Tiktoken } from 'js-tiktoken/lite';
import o200kBase from 'js-tiktoken/ranks/o200k_base';
import cl100kBase from 'js-tiktoken/ranks/cl100k_base';
import {
  COMPLETION_WORDS,
  completionText,
  countChatPromptTokens,
  encodingForModel,
  getTokenCounter,
  type EncodingName,
} from '../../shared/simulator/tokens.ts';

const reference: Record<EncodingName, Tiktoken> = { o200k_base: new Tiktoken(o200kBase), cl100k_base: new Tiktoken(cl100kBase) };
const ENCODINGS: EncodingName[] = ['o200k_base', 'cl100k_base'];

test('models map to the encodings tiktoken uses', () => {
  for (const model of ['gpt-4o-2024-08-06', 'gpt-4o-mini', 'gpt-4.1-2025-04-14', 'gpt-5', 'o1', 'o3-mini', 'o4-mini']) {
    assert.equal(encodingForModel(model), 'o200k_base', model);
  }
  for (const model of ['gpt-4', 'gpt-4-32k', 'gpt-35-turbo-0125', 'gpt-3.5-turbo', 'text-embedding-ada-002', 'text-embedding-3-small']) {
    assert.equal(encodingForModel(model), 'cl100k_base', model);
  }
});

test('prompt counts equal js-tiktoken on varied text', () => {
  const samples = [
    'Hello',
    'Tokenization differs: 1234567 ⚡',
    "I'm here, aren't you?  \n\n\t  ok",
    'Bonjour, ça va très bien aujourd’hui 😀👍🏽 日本語のテキスト',
    'function f(x) {\n  return x ** 2 + 1e-9; // done\n}\n',
    '<|endoftext|> special tokens count as text',
    '   leading and trailing   ',
    'a'.repeat(40) + ' ' + 'ab'.repeat(30),
    Buffer.from(Array.from({ length: 600 }, (_, i) => (i * 7919) % 256)).toString('base64'),
    'https://example.com/a/b?c=d&e=f#g',
    '१२३ ٤٥٦ numbers 12345678901234',
  ];
  for (const encoding of ENCODINGS) {
    const counter = getTokenCounter(encoding);
    for (const text of samples) {
      const expected = reference[encoding].encode(text, [], []).length;
      assert.equal(counter.count(text), expected, `${encoding}: ${JSON.stringify(text.slice(0, 30))}`);
      assert.equal(counter.count(text), expected, 'cached count is the same');
    }
  }
});

test('chat overhead: 3 per message, +1 per name, +3 priming', () => {
  const messages = [
    { role: 'system', content: 'You are helpful.' },
    {
      role: 'user',
      name: 'ann',
      content: [
        { type: 'text', text: 'Hi' },
        { type: 'text', text: ' there' },
      ],
    },
  ];
  for (const encoding of ENCODINGS) {
    const tokens = (text: string) => reference[encoding].encode(text, [], []).length;
    const expected =
      3 + (3 + tokens('system') + tokens('You are helpful.')) + (3 + tokens('user') + tokens('ann') + 1 + tokens('Hi there'));
    assert.equal(countChatPromptTokens(messages, encoding), expected, encoding);
  }
});

test('very long prompts fall back to characters / 4', () => {
  const counter = getTokenCounter('o200k_base');
  assert.equal(counter.count('word '.repeat(50_000)), 62_500);
});

test('every completion word is exactly one token, and so is the text in both encodings', () => {
  for (const encoding of ENCODINGS) {
    for (const word of COMPLETION_WORDS) {
      assert.equal(reference[encoding].encode(word).length, 1, `${encoding}: ${JSON.stringify(word)}`);
    }
    for (const length of [1, 5, 20, COMPLETION_WORDS.length, 100, 257]) {
      assert.equal(reference[encoding].encode(completionText(length)).length, length, `${encoding}: ${length} tokens`);
    }
  }
});
