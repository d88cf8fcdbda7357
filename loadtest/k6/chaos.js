// k6 run loadtest/k6/chaos.js -e BASE_URL=https://gateway.example -e API_KEY=... [-e POOL=gpt-4o] [-e DURATION=2m]
// The load of ../scenarios/chaos.json (mix, stages, thresholds), the file the local driver runs. Its
// `chaos` schedule (Redis killed and frozen, a gateway killed, deployment faults) is the local driver's
// alone: k6 cannot reach the processes. Against a real deployment, run this and inject the faults yourself.
import { iteration, optionsFor, prepare } from './lib.js';

/** @type {import('./lib.js').Scenario} */
const scenario = JSON.parse(open('../scenarios/chaos.json'));
const state = prepare(scenario);

export const options = optionsFor(scenario);

export default function () {
  iteration(state);
}
