/**
 * Import direction, enforced (`npm run lint:deps`, part of `npm test`). The tiers are docs/ARCHITECTURE.md's
 * map: a module imports only from its own tier or below, never up; across folders only through the
 * folder's index.ts; no cycles; monitoring subscribes to events and is imported by nobody on the data plane.
 *
 *   cli, server.ts                        entry points and composition root
 *   api                                   transports (V2 REST, OpenAI, admin)
 *   gateway                               principals, access, limits, usage, audit
 *   inference                             the data plane: InferenceService, embeddings
 *   routing features serving experiments monitoring batch
 *   runtimes registry
 *   storage tensor config errors.ts events.ts hot-metrics.ts version.ts csv.ts units.ts
 */
const TIERS = [
  ['cli', 'server\\.ts'],
  ['api'],
  ['gateway'],
  ['inference'],
  ['routing', 'features', 'serving', 'experiments', 'monitoring', 'batch'],
  ['runtimes', 'registry'],
  ['storage', 'tensor', 'config', 'errors\\.ts', 'events\\.ts', 'hot-metrics\\.ts', 'version\\.ts', 'csv\\.ts', 'units\\.ts'],
];
const re = (names) => `^src/(${names.join('|')})(/|$)`;

const upward = TIERS.slice(1).map((tier, i) => ({
  name: `no-upward-from-${tier.join('-').replace(/\\\./g, '.')}`,
  comment: `${tier.join(', ').replace(/\\\./g, '.')} may not import from a tier above it (${TIERS.slice(0, i + 1)
    .flat()
    .join(', ')
    .replace(/\\\./g, '.')}).`,
  severity: 'error',
  from: { path: re(tier) },
  to: { path: re(TIERS.slice(0, i + 1).flat()) },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'Modules must not import each other in a cycle.',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    ...upward,
    {
      name: 'folder-index-only',
      comment: "Across folders, import a folder's index.ts, never a file inside it.",
      severity: 'error',
      from: { path: '^src/([^/]+)/' },
      to: { path: '^src/[^/]+/', pathNot: ['^src/$1/', '^src/[^/]+/index\\.ts$'] },
    },
    {
      name: 'root-through-index',
      comment: 'Root files (server.ts, errors.ts, ...) import a folder through its index.ts.',
      severity: 'error',
      from: { path: '^src/[^/]+\\.ts$' },
      to: { path: '^src/[^/]+/', pathNot: '^src/[^/]+/index\\.ts$' },
    },
    {
      name: 'monitoring-is-subscribed-not-imported',
      comment: 'Monitoring follows events; only the composition root, the admin API and the CLI import it.',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/monitoring/', '^src/server\\.ts$', '^src/api/', '^src/cli/'] },
      to: { path: '^src/monitoring/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    includeOnly: '^src/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js'] },
  },
};
