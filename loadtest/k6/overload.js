// k6 run loadtest/k6/overload.js -e BASE_URL=https://gateway.example -e API_KEY=... [-e POOL=gpt-4o] [-e DURATION=2m]
// The scenario is ../scenarios/ramp-to-overload.json: the arrival rate ramps past the pool's budgets.
// 429 is an expected answer here (the gateway tells the truth when no deployment can take a request):
// the thresholds fail the run on any other error, on slow 429s, and on a 429 without retry-after.
// Point it at a pool whose budgets you can afford to exhaust.
import { iteration, optionsFor, prepare } from './lib.js';

/** @type {import('./lib.js').Scenario} */
const scenario = JSON.parse(open('../scenarios/ramp-to-overload.json'));
const state = prepare(scenario);

export const options = optionsFor(scenario);

export default function () {
  iteration(state);
}
