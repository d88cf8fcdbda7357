/**
 * Import rules checked by `npm run lint` (dependency-cruiser): no cycles anywhere, and the gateway's
 * stages depend one way only, http → routing → upstream, as docs/architecture.md describes them.
 */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'An import cycle.', from: {}, to: { circular: true } },
    {
      name: 'upstream-stays-below-routing',
      severity: 'error',
      comment: 'gateway/upstream/ talks to the deployment; it knows nothing of routing decisions or of the client-facing HTTP stage.',
      from: { path: '^gateway/upstream/' },
      to: { path: '^gateway/(routing|http)/' },
    },
    {
      name: 'routing-stays-below-http',
      severity: 'error',
      comment: 'gateway/routing/ receives prepared requests; it does not reach back into the HTTP stage.',
      from: { path: '^gateway/routing/' },
      to: { path: '^gateway/http/' },
    },
    {
      name: 'gateway-root-is-common',
      severity: 'error',
      comment:
        'errors, logger, metrics, pools, resource-ids, deployment-gauges and env are used by every stage and so import none of them.',
      from: { path: '^gateway/(errors|logger|metrics|pools|resource-ids|deployment-gauges|env)\\.ts$' },
      to: { path: '^gateway/(http|routing|upstream)/' },
    },
    {
      name: 'product-code-not-from-tools',
      severity: 'error',
      comment: 'gateway/ and shared/ ship; they import nothing from the tests or the load tools.',
      from: { path: '^(gateway|shared)/' },
      to: { path: '^(test|loadtest)/' },
    },
    {
      name: 'shared-not-from-gateway',
      severity: 'error',
      comment: 'shared/ serves the gateway and the load tools alike.',
      from: { path: '^shared/' },
      to: { path: '^gateway/' },
    },
    {
      name: 'tests-share-helpers-through-shared',
      severity: 'error',
      comment: "Process helpers live in shared/processes; only the load tools' own tests import loadtest/.",
      from: { path: '^test/', pathNot: '^test/loadtest/' },
      to: { path: '^loadtest/' },
    },
    {
      name: 'loadtest-not-from-test',
      severity: 'error',
      from: { path: '^loadtest/' },
      to: { path: '^test/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs'] },
  },
};
