// k6 run loadtest/k6/streaming-chat.js -e BASE_URL=https://gateway.example -e API_KEY=... [-e POOL=gpt-4o] [-e DURATION=2m]
// The scenario (mix, stages, thresholds) is ../scenarios/streaming-chat.json, the same file the local driver runs.
import { iteration, optionsFor, prepare } from './lib.js';

/** @type {import('./lib.js').Scenario} */
const scenario = JSON.parse(open('../scenarios/streaming-chat.json'));
const state = prepare(scenario);

export const options = optionsFor(scenario);

export default function () {
  iteration(state);
}
