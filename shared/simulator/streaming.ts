/**
 * Server-sent events as Azure streams them (reference section 4, a real gpt-4o capture):
 * 1. a prompt-annotation chunk: choices [], created 0, empty id/model/object, prompt_filter_results;
 * 2. a role chunk per choice (delta {content:"", refusal:null, role:"assistant"}, empty filter results);
 * 3. one chunk per generated token per choice, with choice-level content_filter_results;
 * 4. a finish chunk per choice (delta {}, finish_reason stop|length);
 * 5. with stream_options.include_usage, a chunk with choices [] and usage (every other chunk then
 *    carries "usage":null); 6. data: [DONE].
 *
 * Events are assembled from pre-serialized fragments with string templates: a stream of 20 tokens
 * costs a few microseconds, not 25 JSON.stringify calls.
 */
import type { SimRequest } from './requests.ts';
import {
  CHOICE_FILTER_RESULTS_JSON,
  PROMPT_FILTER_RESULTS_JSON,
  chatUsage,
  completionTokensOf,
  completionsUsage,
  type Generation,
} from './responses.ts';
import { COMPLETION_WORDS } from './tokens.ts';

/**
 * The stream's events, grouped into ticks of the latency model: tick 0 (at ttft) holds the
 * preamble and the first token of every choice, tick k the (k+1)-th tokens, and the last tick
 * (at ttft + tokens × perTokenMs) the finish chunks, usage and [DONE].
 */
export interface EventScript {
  events: string[];
  /** tickEnds[k] = index one past the last event of tick k. */
  tickEnds: number[];
}

const WORD_JSON = COMPLETION_WORDS.map((word) => JSON.stringify(word));
const DONE_EVENT = 'data: [DONE]\n\n';

function event(json: string): string {
  return `data: ${json}\n\n`;
}

export function buildStreamScript(request: SimRequest, generation: Generation): EventScript {
  const chat = request.operation === 'chat/completions';
  const usageNull = request.includeUsage ? ',"usage":null' : '';
  const identity = `"created":${generation.created},"id":"${generation.id}","model":${JSON.stringify(generation.model)}`;
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const fingerprint = chat ? `,"system_fingerprint":"${generation.systemFingerprint}"` : '';
  const tail = `],${identity},"object":"${object}"${fingerprint}${usageNull}}`;

  const events: string[] = [];
  const tickEnds: number[] = [];
  events.push(
    event(`{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":${PROMPT_FILTER_RESULTS_JSON}${usageNull}}`),
  );
  if (chat) {
    for (let index = 0; index < request.choices; index++) {
      events.push(
        event(
          `{"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":${index},"logprobs":null}${tail}`,
        ),
      );
    }
  }
  for (let token = 0; token < generation.tokensPerChoice; token++) {
    const word = WORD_JSON[token % WORD_JSON.length];
    for (let index = 0; index < request.choices; index++) {
      events.push(
        event(
          chat
            ? `{"choices":[{"content_filter_results":${CHOICE_FILTER_RESULTS_JSON},"delta":{"content":${word}},"finish_reason":null,"index":${index},"logprobs":null}${tail}`
            : `{"choices":[{"content_filter_results":${CHOICE_FILTER_RESULTS_JSON},"finish_reason":null,"index":${index},"logprobs":null,"text":${word}}${tail}`,
        ),
      );
    }
    tickEnds.push(events.length);
  }
  for (let index = 0; index < request.choices; index++) {
    events.push(
      event(
        chat
          ? `{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"${generation.finishReason}","index":${index},"logprobs":null}${tail}`
          : `{"choices":[{"content_filter_results":{},"finish_reason":"${generation.finishReason}","index":${index},"logprobs":null,"text":""}${tail}`,
      ),
    );
  }
  if (request.includeUsage) {
    const completionTokens = completionTokensOf(generation, request);
    const usage = chat ? chatUsage(generation.promptTokens, completionTokens) : completionsUsage(generation.promptTokens, completionTokens);
    events.push(event(`{"choices":[],${identity},"object":"${object}"${fingerprint},"usage":${JSON.stringify(usage)}}`));
  }
  events.push(DONE_EVENT);
  tickEnds.push(events.length);
  return { events, tickEnds };
}
