import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeId, encodeId } from '../../../gateway/resource-ids.ts';
import { IdRewriter, withClientIds, withTaggedIds } from '../../../gateway/upstream/id-rewriter.ts';

const TAG = '0123456789';
const tagged = (id: string) => encodeId(id, TAG);

/** The rewriter fed `chunks` one by one: what it sent for each (and at the end), joined, and the usage it read. */
function through(chunks: (string | Buffer)[], stream: boolean, restored = new Map<string, string>()) {
  const rewriter = new IdRewriter(TAG, stream, restored, true);
  const out: string[] = [];
  for (const chunk of chunks) {
    const sent = rewriter.take(Buffer.from(chunk));
    if (sent) out.push(sent.toString());
  }
  const rest = rewriter.end();
  if (rest) out.push(rest.toString());
  return { out, text: out.join(''), usage: rewriter.usage };
}

describe('id rewriter', () => {
  test('ids at id fields carry the tag; text that only looks like one, and other fields, do not change', () => {
    const body = JSON.stringify({
      id: 'resp_abc',
      previous_response_id: 'resp_prev',
      output: [
        { id: 'msg_1', content: [{ text: 'see {"id":"msg_fake"} and "id": "rs_2"' }] },
        { id: 'fc_3', call_id: 'call_4' },
      ],
      conversation: { id: 'conv_5' },
      first_id: 'msg_1',
      model: 'gpt-4o',
      user: 'id_not_an_id',
    });
    const out = JSON.parse(withTaggedIds(body, TAG));
    assert.equal(out.id, tagged('resp_abc'));
    assert.equal(out.previous_response_id, tagged('resp_prev'));
    assert.equal(out.output[0].id, tagged('msg_1'));
    assert.equal(out.output[0].content[0].text, 'see {"id":"msg_fake"} and "id": "rs_2"');
    assert.equal(out.output[1].id, tagged('fc_3'));
    assert.equal(out.output[1].call_id, 'call_4');
    assert.equal(out.conversation.id, tagged('conv_5'));
    assert.equal(out.first_id, tagged('msg_1'));
    assert.equal(out.user, 'id_not_an_id');
    // Encrypted reasoning content is tied to its resource as well.
    const reasoning = JSON.parse(withTaggedIds('{"type":"reasoning","id":"rs_1","encrypted_content":"gAAA+/b=="}', TAG));
    assert.equal(reasoning.encrypted_content, `sw1${TAG}.gAAA+/b==`);
    assert.equal(withTaggedIds(`{"encrypted_content":"sw1${TAG}.x"}`, TAG), `{"encrypted_content":"sw1${TAG}.x"}`);
    // Pretty-printed JSON (Azure's non-streaming bodies) too; an id already ours stays as it is.
    assert.equal(withTaggedIds('{\n  "id" : "resp_x"\n}', TAG), `{\n  "id" : "${tagged('resp_x')}"\n}`);
    assert.equal(withTaggedIds(`{"id":"${tagged('resp_x')}"}`, TAG), `{"id":"${tagged('resp_x')}"}`);
  });

  test('a stream is rewritten event by event, across any chunking, and its usage read from response.completed', () => {
    const events = [
      'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_a","usage":null}}\n\n',
      'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"msg_b","delta":"hé"}\n\n',
      'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_a","usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":7,"total_tokens":19}}}\n\n',
    ];
    const whole = events.join('');
    const bytes = Buffer.from(whole);
    const { text, usage, out } = through([whole], true);
    assert.equal(out.length, 1);
    assert.ok(text.includes(`"id":"${tagged('resp_a')}"`));
    assert.ok(text.includes(`"item_id":"${tagged('msg_b')}"`));
    assert.ok(!text.includes('"resp_a"') && !text.includes('"msg_b"'));
    assert.deepEqual(usage, { promptTokens: 12, completionTokens: 7, totalTokens: 19, cachedTokens: 4 });
    // Again in 7-byte pieces: ids, events and the two-byte é are all cut somewhere.
    const pieces: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += 7) pieces.push(bytes.subarray(at, at + 7));
    assert.equal(through(pieces, true).text, text);
  });

  test('each whole event is passed on before the stream ends', () => {
    const rewriter = new IdRewriter(TAG, true, new Map(), true);
    const first = rewriter.take(Buffer.from('event: a\ndata: {"id":"resp_1"}\n\nevent: b\ndata: {"id"'))?.toString();
    assert.ok(first);
    assert.ok(first.includes(tagged('resp_1')));
    assert.ok(!first.includes('event: b'));
    const second = rewriter.take(Buffer.from(':"resp_2"}\n\n'))?.toString();
    assert.equal(second, `event: b\ndata: {"id":"${tagged('resp_2')}"}\n\n`);
    assert.equal(rewriter.end(), undefined);
  });

  test('a JSON body: usage read, ids tagged, and the ids the client sent given back in an error text', () => {
    const restored = new Map([['resp_prev', tagged('resp_prev')]]);
    const body = '{"error":{"message":"Previous response with id \'resp_prev\' not found.","param":"previous_response_id"}}';
    const { text } = through([body.slice(0, 20), body.slice(20)], false, restored);
    assert.ok(text.includes(`id '${tagged('resp_prev')}' not found`));
    const ok = through(['{"id":"resp_z","usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}'], false);
    assert.equal(decodeId(JSON.parse(ok.text).id)?.upstreamId, 'resp_z');
    assert.deepEqual(ok.usage, { promptTokens: 3, completionTokens: 2, totalTokens: 5, cachedTokens: undefined });
    assert.equal(withClientIds(Buffer.from('x'), new Map()).toString(), 'x');
  });
});
