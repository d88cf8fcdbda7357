/**
 * A batch input file as the upload reads it: cut into lines across chunk boundaries with their offsets,
 * and checked line by line (each kind of problem, with its 1-based line number) against the pools.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildPools } from '../../../gateway/pools.ts';
import { JsonlSplitter, type JsonlLine } from '../../../gateway/background/records/jsonl-lines.ts';
import { BatchFileCheck, type CheckResult } from '../../../gateway/background/records/line-check.ts';
import { NOWHERE } from '../../helpers/collaborators.ts';
import { testConfig } from '../../helpers/gateway.ts';

function split(text: string, chunkSizes: number[], maxLineBytes = 1024): JsonlLine[] {
  const splitter = new JsonlSplitter(maxLineBytes);
  const bytes = Buffer.from(text);
  const lines: JsonlLine[] = [];
  let at = 0;
  for (const size of chunkSizes) {
    lines.push(...splitter.push(bytes.subarray(at, at + size)));
    at += size;
  }
  lines.push(...splitter.push(bytes.subarray(at)), ...splitter.end());
  return lines;
}

describe('JsonlSplitter', () => {
  test('lines across chunk boundaries keep their bytes, 1-based numbers and offsets in the file', () => {
    const text = '{"a":1}\r\n\n{"b":22}\n{"c":333}';
    for (const chunks of [[], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [8], [9, 1], [10, 5]]) {
      const lines = split(text, chunks);
      assert.deepEqual(
        lines.map((l) => [l.number, l.offset, l.length, l.bytes?.toString()]),
        [
          [1, 0, 8, '{"a":1}\r'],
          [2, 9, 0, ''],
          [3, 10, 8, '{"b":22}'],
          [4, 19, 9, '{"c":333}'],
        ],
        `chunks ${chunks.join(',')}`,
      );
    }
  });

  test('a final newline ends the last line: no empty line after it', () => {
    assert.deepEqual(
      split('{"a":1}\n', [3]).map((l) => l.number),
      [1],
    );
  });

  test('a line over the limit is measured, not kept', () => {
    const long = 'x'.repeat(50);
    const lines = split(`{"a":1}\n${long}\n{"b":2}\n`, [12, 20], 20);
    assert.deepEqual(
      lines.map((l) => [l.number, l.offset, l.length, l.bytes === undefined]),
      [
        [1, 0, 7, false],
        [2, 8, 50, true],
        [3, 59, 7, false],
      ],
    );
  });
});

describe('BatchFileCheck', () => {
  const config = testConfig({
    pools: {
      chat: { deployments: [{ id: 'd', endpoint: NOWHERE }] },
      other: { deployments: [{ id: 'd', endpoint: NOWHERE }] },
      small: { deployments: [{ id: 'd', endpoint: NOWHERE, tpm: 100 }] },
      interactive: { deployments: [{ id: 'd', endpoint: NOWHERE }], background: { enabled: false } },
    },
  });
  const pools = buildPools(config);
  const request = (customId: string, body: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      custom_id: customId,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'chat', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, ...body },
      ...extra,
    });
  const checkFile = (lines: string[], options: { maxLines?: number; maxBodyBytes?: number } = {}): CheckResult => {
    const check = new BatchFileCheck({ pools, maxBodyBytes: options.maxBodyBytes ?? 4096, maxLines: options.maxLines ?? 100 });
    for (const line of split(lines.join('\n'), [], check.maxLineBytes)) check.check(line);
    return check.result();
  };
  const problems = (result: CheckResult) => (result.ok ? [] : result.problems.map((p) => [p.line, p.code]));

  test('a valid file: its pool, its endpoint (Azure names normalised), its request count; blank lines are not requests', () => {
    const result = checkFile([request('a'), '', request('b', {}, { url: '/chat/completions' }), '   ']);
    assert.deepEqual(result, { ok: true, summary: { pool: 'chat', endpoint: '/v1/chat/completions', requests: 2 } });
  });

  test('each kind of problem, with its line number', () => {
    const result = checkFile([
      request('ok-1'),
      '{"custom_id": "broken"',
      '[1, 2]',
      request('', {}),
      request('ok-1'),
      request('get', {}, { method: 'GET' }),
      request('url', {}, { url: '/v1/completions' }),
      JSON.stringify({ custom_id: 'nobody', method: 'POST', url: '/v1/chat/completions', body: 'text' }),
      request('no-model', { model: undefined }),
      request('unknown', { model: 'nope' }),
      request('interactive', { model: 'interactive' }),
      request('embeddings', {}, { url: '/v1/embeddings' }),
      request('other', { model: 'other' }),
      request('stream', { stream: true }),
      request('big', { messages: [{ role: 'user', content: 'x'.repeat(5000) }] }),
      request('budget', { model: 'small', max_tokens: 500 }),
    ]);
    assert.equal(result.ok, false);
    assert.deepEqual(problems(result), [
      [2, 'invalid_json_line'],
      [3, 'invalid_request'],
      [4, 'invalid_custom_id'],
      [5, 'duplicate_custom_id'],
      [6, 'invalid_method'],
      [7, 'invalid_url'],
      [8, 'invalid_body'],
      [9, 'missing_model'],
      [10, 'model_not_found'],
      [11, 'model_not_batchable'],
      [12, 'mismatched_url'],
      [13, 'mismatched_model'],
      [14, 'stream_not_supported'],
      [15, 'body_too_large'],
      [16, 'mismatched_model'],
    ]);
    const messages = result.ok ? [] : result.problems.map((p) => p.message);
    assert.match(messages[3]!, /also the custom_id of line 1/);
    assert.match(messages[8]!, /"nope" does not exist/);
  });

  test('an estimate above every token budget is refused, as an interactive request is (400 TokensExceedBudget)', () => {
    const result = checkFile([request('budget', { model: 'small', max_tokens: 500 })]);
    assert.deepEqual(problems(result), [[1, 'tokens_exceed_budget']]);
    assert.match(result.ok ? '' : result.problems[0]!.message, /largest token budget of pool small \(100 tokens per minute\)/);
  });

  test('too many requests, an empty file, a line too long; only the first 20 problems are kept, all are counted', () => {
    assert.deepEqual(problems(checkFile([request('a'), request('b'), request('c')], { maxLines: 2 })), [[3, 'too_many_requests']]);
    assert.deepEqual(problems(checkFile(['', ' '])), [[null, 'empty_file']]);
    assert.deepEqual(problems(checkFile([request('a'), 'y'.repeat(9000)], { maxBodyBytes: 1000 })), [[2, 'line_too_large']]);
    const many = checkFile(Array.from({ length: 30 }, () => 'not json'));
    assert.equal(many.ok, false);
    assert.equal(many.ok ? 0 : many.problems.length, 20);
    assert.equal(many.ok ? 0 : many.problemCount, 30);
  });
});
