/**
 * `switchyard batch` against a real server: create from a local file with --wait (quiet when stderr is not a
 * terminal; exit 1 when the job did not complete), list, get, download of the output and error files,
 * retry-failed and cancel refusals, and the progress line a terminal shows.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { progressLine } from '../src/cli/batch.js';
import { mlp } from '../tools/onnx/zoo.js';
import { fails, ok, runCli } from './cli-helpers.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

describe('switchyard batch', () => {
  let server: TestServer;
  let input = '';
  const N = 12;
  before(async () => {
    server = await startSwitchyard({ mlp: { versions: { 1: mlp() } } }, { listen: true, config: { batchWorkers: 1 } });
    input = join(server.dir, 'rows.jsonl');
    await writeFile(input, Array.from({ length: N }, (_, i) => JSON.stringify({ id: `k${i}`, v: i === 4 ? [1, 2] : floats(64, i + 3) })).join('\n'));
  });
  after(async () => server?.close());
  const conn = (): string[] => ['--url', server.url];

  it('create --wait: quiet without a terminal, the finished job on stdout; list, get, download', async () => {
    const r = await runCli([
      'batch',
      'create',
      '--model',
      'mlp',
      '--input',
      input,
      '--map',
      'features=v',
      '--key-field',
      'id',
      '--chunk-rows',
      '5',
      '--wait',
      '--json',
      ...conn(),
    ]);
    const job = JSON.parse(ok(r)) as { id: string; status: string; counts: { succeeded: number; failed: number } };
    assert.equal(r.stderr, '');
    assert.equal(job.status, 'completed');
    assert.deepEqual([job.counts.succeeded, job.counts.failed], [N - 1, 1]);
    const listed = JSON.parse(ok(await runCli(['batch', 'list', '--json', ...conn()]))) as { jobs: Array<{ id: string }> };
    assert.ok(listed.jobs.some((j) => j.id === job.id));
    assert.match(ok(await runCli(['batch', 'get', job.id, ...conn()])), /completed/);
    const out = join(server.dir, 'out.jsonl');
    ok(await runCli(['batch', 'download', job.id, '-o', out, ...conn()]));
    const lines = (await readFile(out, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { key: string });
    assert.equal(lines.length, N - 1);
    assert.ok(!lines.some((l) => l.key === 'k4'));
    const errs = ok(await runCli(['batch', 'download', job.id, '--errors', ...conn()]));
    assert.match(errs, /"key":"k4".*wrong_element_count/);
    fails(await runCli(['batch', 'cancel', job.id, ...conn()]), /409/);
    fails(await runCli(['batch', 'retry-failed', job.id, ...conn()]), /409.*no failed rows/);
  });

  it('--wait exits 1 when the job fails (over its failure budget); a bad spec is refused with the field named', async () => {
    fails(
      await runCli(['batch', 'create', '--model', 'mlp', '--input', input, '--map', 'features=v', '--max-failed-rows', '0', '--wait', ...conn()]),
      /ended failed: 1 rows failed/,
    );
    fails(await runCli(['batch', 'create', '--model', 'mlp', '--input', input, '--map', 'nope=v', ...conn()]), /400 mapping\.nope/);
    fails(await runCli(['batch', 'create', '--model', 'mlp', ...conn()]), /exactly one of --input/);
  });

  it('the progress line: bar, percent, rows, rows/s, ETA, failed', () => {
    const line = progressLine(
      {
        id: 'j',
        status: 'in_progress',
        model: 'm',
        version: null,
        format: 'csv',
        outputFormat: 'jsonl',
        retryOf: null,
        counts: { total: 200, succeeded: 99, failed: 1, done: 100 },
        progress: { fraction: 0.5, rowsPerSecond: 25, etaSeconds: 4 },
        outputFileId: null,
        errorFileId: null,
        errors: null,
        createdAt: '',
        startedAt: null,
        endedAt: null,
      },
      10,
    );
    assert.equal(line, '█████░░░░░  50%  100/200 rows  25 rows/s  ETA 4s  failed 1  in_progress');
  });

  it('--help lists every subcommand; create --help every flag', async () => {
    const help = ok(await runCli(['batch', '--help']));
    for (const c of ['create', 'list', 'get', 'cancel', 'download', 'retry-failed']) assert.match(help, new RegExp(`\\n  ${c} `));
    const create = ok(await runCli(['batch', 'create', '--help']));
    for (const f of ['--model', '--input', '--input-path', '--map', '--key-field', '--include', '--output-format', '--max-failed-rows', '--webhook', '--wait'])
      assert.ok(create.includes(f), f);
  });
});
