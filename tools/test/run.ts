/**
 * @module
 * Runs one of the two test suites on the compiled tests in `dist/test/` (run `tsc -p tsconfig.json` first):
 *
 *   node dist/tools/test/run.js unit          # pure logic, no services: every file at once (one per CPU)
 *   node dist/tools/test/run.js integration   # real Postgres, Redis, NATS, onnxruntime, servers, child processes
 *
 * The unit suite is the list below; every other `test/*.test.ts` is an integration file, so a new file runs in
 * the integration suite until someone adds it here. A unit file must not open a socket, start a server or a
 * child process, load onnxruntime, or reach Postgres, Redis or NATS (temporary files and in-memory SQLite are
 * fine). Extra arguments go to `node --test` (e.g. `--test-name-pattern=...`); `TEST_CONCURRENCY` overrides the
 * number of files run at once.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** The unit suite (file names in test/, without `.test.ts`). */
const UNIT: readonly string[] = [
  'batcher',
  'drift',
  'errors',
  'experiment-stats',
  'gateway-authorize',
  'growthbook',
  'hot-metrics',
  'llm-fair-queue',
  'llm-sse',
  'routing-blocks',
  'server-config',
  'tensor',
];

/**
 * Integration files run this many at a time. Each file picks free ports and a fresh Postgres schema, but several
 * still prove behaviour under load (queue limits, replicas behind HAProxy), so they run one at a time until two at
 * a time has been shown to pass on a loaded 2-vCPU machine; `TEST_CONCURRENCY=2` tries it.
 */
const INTEGRATION_CONCURRENCY = 1;

const HELP = 'usage: node dist/tools/test/run.js unit|integration|list-unit|list-integration [node --test options]';

function main(argv: string[]): void {
  const [suite, ...rest] = argv;
  if (suite === '--help' || suite === '-h') {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const dir = fileURLToPath(new URL('../../test/', import.meta.url));
  const all = readdirSync(dir)
    .filter((f) => f.endsWith('.test.js'))
    .sort();
  const unitFiles = new Set(UNIT.map((n) => `${n}.test.js`));
  const missing = [...unitFiles].filter((f) => !all.includes(f));
  if (missing.length > 0) {
    process.stderr.write(`tools/test/run.ts lists unit files that do not exist in ${dir}: ${missing.join(', ')}\n`);
    process.exitCode = 2;
    return;
  }
  let files: string[];
  let concurrency: number;
  if (suite === 'unit' || suite === 'list-unit') {
    files = all.filter((f) => unitFiles.has(f));
    concurrency = Math.max(2, availableParallelism());
  } else if (suite === 'integration' || suite === 'list-integration') {
    files = all.filter((f) => !unitFiles.has(f));
    concurrency = INTEGRATION_CONCURRENCY;
  } else {
    process.stderr.write(`${HELP}\n`);
    process.exitCode = 2;
    return;
  }
  if (suite.startsWith('list-')) {
    process.stdout.write(files.map((f) => `${f}\n`).join(''));
    return;
  }
  const env = process.env['TEST_CONCURRENCY'];
  if (env !== undefined) concurrency = Number(env);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    process.stderr.write(`TEST_CONCURRENCY must be a positive integer, got ${env}\n`);
    process.exitCode = 2;
    return;
  }
  const args = ['--test', `--test-concurrency=${concurrency}`, ...rest, ...files.map((f) => join(dir, f))];
  const child = spawn(process.execPath, args, { stdio: 'inherit' });
  child.on('exit', (code, signal) => {
    process.exitCode = code ?? (signal ? 1 : 0);
  });
}

main(process.argv.slice(2));
