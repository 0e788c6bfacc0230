/**
 * `switchyard monitor …` against one in-process server (open mode, every request logged) with one model: the
 * prediction log as a table, JSONL and a CSV file; a reference profile from the log and from a CSV dataset, shown
 * and deleted; drift over a shifted window (table sorted by PSI) and its history; alert rules set, listed, firing
 * with a signed webhook, their events, deleted; errors from the server and from bad flags; --help. A few commands
 * run the real binary (dist/src/cli/main.js) as a child process, the rest run in-process.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Command } from 'commander';
import { monitorCommand } from '../src/cli/monitor.js';
import { verifyWebhook } from '../src/monitoring/alerts.js';
import { mlp } from '../tools/onnx/zoo.js';
import { normals, startSwitchyard, startWebhookReceiver, type TestServer, type WebhookReceiver } from './helpers.js';
import { runCli, ok, fails, rows, type Run } from './cli-helpers.js';

/** The real binary, as a child process. */
const run = (args: string[]): Promise<Run> => runCli(args, { env: { SWITCHYARD_API_KEY: '' } });

/**
 * `switchyard monitor <args>` in this process: what the commands print (strings written to stdout / stderr; the
 * test runner's own output, written as buffers, passes through), the exit status they set or commander's.
 */
async function runIn(args: string[]): Promise<Run> {
  const cmd = monitorCommand();
  let stdout = '';
  let stderr = '';
  const configure = (c: Command): void => {
    c.exitOverride().configureOutput({ writeOut: (t) => (stdout += t), writeErr: (t) => (stderr += t) });
    c.commands.forEach(configure);
  };
  configure(cmd);
  const out = process.stdout.write;
  const err = process.stderr.write;
  const capture = (orig: typeof out, add: (s: string) => void) =>
    function (this: unknown, chunk: unknown, ...rest: unknown[]): boolean {
      if (typeof chunk === 'string') {
        add(chunk);
        const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
        cb?.();
        return true;
      }
      return (orig as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof out;
  const prev = process.exitCode;
  process.exitCode = undefined;
  process.stdout.write = capture(out, (s) => (stdout += s));
  process.stderr.write = capture(err, (s) => (stderr += s));
  let code: number;
  try {
    await cmd.parseAsync(args, { from: 'user' });
    code = Number(process.exitCode ?? 0);
  } catch (e) {
    if ((e as Error).name !== 'CommanderError') throw e;
    code = (e as { exitCode: number }).exitCode;
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
    process.exitCode = prev;
  }
  return { code, stdout, stderr };
}

describe('switchyard monitor CLI', () => {
  let srv: TestServer;
  let url: string[];
  let hook: WebhookReceiver;

  const infer = async (rows: number, seed: number, mean = 0, requestId?: string): Promise<void> => {
    const r = await fetch(`${srv.url}/v2/models/fraud/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(requestId ? { 'x-request-id': requestId } : {}) },
      body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [rows, 64], data: normals(rows * 64, seed, mean) }] }),
    });
    assert.equal(r.status, 200, await r.text());
  };

  before(async () => {
    hook = await startWebhookReceiver('/hook');
    // Drift and alerts are evaluated by the test (the periodic timers are set far out).
    srv = await startSwitchyard(
      { fraud: { versions: { 1: mlp(3) } } },
      { listen: true, config: { monitorSampleRate: 1, driftEvalMs: 3_600_000, alertEvalMs: 3_600_000 } },
    );
    url = ['--url', srv.url];
  });
  after(async () => {
    await srv.close();
    await hook.close();
  });

  it('--help documents every subcommand and its flags', async () => {
    const [top, mh, ah, ph] = (
      await Promise.all([run(['--help']), run(['monitor', '--help']), run(['monitor', 'alerts', '--help']), run(['monitor', 'profile', '--help'])])
    ).map(ok) as [string, string, string, string];
    assert.match(top, /monitor/);
    for (const c of ['predictions', 'profile', 'drift', 'alerts']) assert.match(mh, new RegExp(`\\b${c}\\b.*\\S`), `monitor --help lacks ${c}`);
    for (const c of ['status', 'set', 'rules', 'delete', 'events']) assert.match(ah, new RegExp(`\\b${c}\\b.*\\S`), `monitor alerts --help lacks ${c}`);
    for (const c of ['set', 'show', 'delete']) assert.match(ph, new RegExp(`\\b${c}\\b.*\\S`), `monitor profile --help lacks ${c}`);
    const expect: Record<string, string[]> = {
      predictions: ['--model', '--version', '--since', '--until', '--limit', '--format', '--output'],
      'profile set': ['--file', '--format', '--from-log', '--since', '--until', '--limit', '--names'],
      'profile show': [],
      'profile delete': [],
      drift: ['--version', '--history', '--since', '--until', '--limit'],
      'alerts status': [],
      'alerts set': ['--kind', '--model', '--threshold', '--version', '--feature', '--metric', '--for', '--webhook', '--secret', '--disabled', '--description'],
      'alerts rules': [],
      'alerts delete': [],
      'alerts events': ['--rule', '--limit', '--before'],
    };
    const root = monitorCommand();
    for (const [path, flags] of Object.entries(expect)) {
      let c: Command | undefined = root;
      for (const name of path.split(' ')) c = c?.commands.find((x) => x.name() === name);
      assert.ok(c, `monitor ${path} exists`);
      const h = c.helpInformation();
      assert.ok(c.description().length > 20, `monitor ${path} has a description`);
      for (const f of [...flags, '--url', '--api-key', '--actor', '--json']) assert.ok(h.includes(f), `monitor ${path} --help lacks ${f}`);
      for (const o of c.options) assert.ok(o.description.length > 5, `monitor ${path} ${o.flags} has a description`);
      for (const a of c.registeredArguments) assert.ok(a.description.length > 5, `monitor ${path} <${a.name()}> has a description`);
    }
  });

  it('predictions: a table, JSON, JSONL to standard output, CSV to a file', async () => {
    assert.match(ok(await runIn(['predictions', '--model', 'fraud', ...url])), /No logged predictions/);
    await infer(1, 1, 0, 'req-a');
    await infer(2, 2, 0, 'req-b');
    await srv.sy.monitoring.log.flush();

    const human = ok(await runIn(['predictions', '--model', 'fraud', '--since', '1h', ...url]));
    assert.match(human, /req-a/);
    assert.match(human, /features FP32\[2,64\]/);
    assert.match(human, /2 predictions, oldest first/);
    const j = JSON.parse(ok(await runIn(['predictions', '--model', 'fraud', '--version', '1', '--json', ...url]))) as {
      predictions: Array<{ requestId: string; inputs: Array<{ data: number[] }> }>;
    };
    assert.deepEqual(
      j.predictions.map((p) => p.requestId),
      ['req-a', 'req-b'],
    );
    assert.equal(j.predictions[0]?.inputs[0]?.data.length, 64);

    const jsonl = ok(await runIn(['predictions', '--model', 'fraud', '--format', 'jsonl', '--limit', '1', ...url]));
    const lines = jsonl.trim().split('\n');
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]!) as { requestId: string }).requestId, 'req-a');

    // The binary, streaming CSV to a file.
    const file = join(srv.dir, 'predictions.csv');
    assert.match(
      ok(await run(['monitor', 'predictions', '--model', 'fraud', '--format', 'csv', '--output', file, ...url])),
      /Wrote .*predictions\.csv \(csv, [\d.]+ KiB\)/,
    );
    const csv = (await readFile(file, 'utf8')).trimEnd().split('\r\n');
    assert.equal(
      csv[0],
      [
        'at',
        'model',
        'version',
        'tenant',
        'arm',
        'request_id',
        'latency_ms',
        'row',
        ...Array.from({ length: 64 }, (_, i) => `features[${i}]`),
        'score[0]',
      ].join(','),
    );
    assert.equal(csv.length, 4, 'a header and one line per request row (1 + 2)');
    assert.deepEqual(
      csv.slice(1).map((l) => {
        const c = l.split(',');
        return [c[1], c[2], c[5], c[7]];
      }),
      [
        ['fraud', '1', 'req-a', '0'],
        ['fraud', '1', 'req-b', '0'],
        ['fraud', '1', 'req-b', '1'],
      ],
    );
    // The extension picks the format when --format is not given.
    const jfile = join(srv.dir, 'p.jsonl');
    assert.match(ok(await runIn(['predictions', '--model', 'fraud', '-o', jfile, ...url])), /Wrote .*p\.jsonl \(jsonl/);
    assert.equal((await readFile(jfile, 'utf8')).trim().split('\n').length, 2);
  });

  it('profile: from the log, from a CSV file (the binary), show, delete', async () => {
    const fromLog = ok(await runIn(['profile', 'set', 'fraud', '1', '--from-log', '--since', '1h', '--limit', '10', ...url]));
    assert.match(fromLog, /Reference profile of fraud version 1 set from prediction log: 2 requests: 3 rows, 65 features/);

    const header = Array.from({ length: 64 }, (_, i) => `features[${i}]`).join(',');
    const values = normals(2000 * 64, 99);
    const lines = [header];
    for (let r = 0; r < 2000; r++)
      lines.push(
        values
          .slice(r * 64, (r + 1) * 64)
          .map((v) => v.toFixed(5))
          .join(','),
      );
    const file = join(srv.dir, 'reference.csv');
    await writeFile(file, `${lines.join('\n')}\n`);
    const set = ok(await run(['monitor', 'profile', 'set', 'fraud', '1', '--file', file, '--actor', 'alice', ...url]));
    assert.match(set, /set from dataset \(csv, 2000 rows\): 2000 rows, 65 features/);

    const shown = ok(await runIn(['profile', 'show', 'fraud', '1', ...url]));
    assert.match(shown, /Source\s*│\s*dataset \(csv, 2000 rows\)/);
    assert.match(shown, /Rows\s*│\s*2000/);
    assert.match(shown, /by alice/);
    const f0 = rows(shown).find((r) => r[0] === 'features[0]');
    assert.ok(f0, 'features[0] is listed');
    const [, source, tensor, kind, min, max] = f0;
    assert.deepEqual([source, tensor, kind], ['input', 'features[0]', 'numeric']);
    const col0 = Array.from({ length: 2000 }, (_, r) => Number(values[r * 64]!.toFixed(5)));
    assert.equal(Number(min), Number(Math.min(...col0).toPrecision(4)));
    assert.equal(Number(max), Number(Math.max(...col0).toPrecision(4)));
    assert.deepEqual(
      rows(shown)
        .find((r) => r[0] === 'score')
        ?.slice(1, 6),
      ['output', 'score[0]', 'numeric', '-', '-'],
    );
    const j = JSON.parse(ok(await runIn(['profile', 'show', 'fraud', '1', '--json', ...url]))) as { profile: { rows: number; features: unknown[] } };
    assert.equal(j.profile.rows, 2000);
    assert.equal(j.profile.features.length, 65);
  });

  it('drift: per version, features by PSI, dataset drift; --history', async () => {
    const before = ok(await runIn(['drift', 'fraud', ...url]));
    assert.match(before, /Rows\s*│\s*0/);
    assert.match(before, /Dataset drift\s*│\s*not judged yet/);

    for (let i = 0; i < 12; i++) await infer(100, 500 + i, 1.0); // 1200 rows, mean shifted by one sd
    const out = ok(await run(['monitor', 'drift', 'fraud', '--version', '1', ...url])); // --version reaches the subcommand
    assert.match(out, /Model fraud version 1/);
    assert.match(out, /Rows\s*│\s*1200/);
    assert.match(out, /Dataset drift\s*│\s*yes \(64 of 64 features drifted: 100%\)/);
    assert.match(out, /PSI ≥ 0\.2, JS distance ≥ 0\.1 or \(numeric\) KS p-value < 0\.01/);
    const table = rows(out).filter((r) => r.length === 11);
    assert.deepEqual(table.map((r) => r[0]).slice(-1), ['score'], 'the output feature has no reference values: last');
    const psi = table.slice(0, 64).map((r) => Number(r[3]));
    assert.ok(
      psi.every((p, i) => p > 0.2 && (i === 0 || p <= psi[i - 1]!)),
      `sorted by PSI, highest first: ${psi.join(' ')}`,
    );
    assert.ok(
      table.slice(0, 64).every((r) => r[7] === 'yes' && r[8] === '0%' && r[9] === '0%'),
      'drifted, nothing missing or NaN',
    );

    const j = JSON.parse(ok(await runIn(['drift', 'fraud', '--json', ...url]))) as {
      reports: Array<{ version: number; report: { rows: number; datasetDrift: boolean } }>;
    };
    assert.deepEqual(
      j.reports.map((r) => [r.version, r.report.rows, r.report.datasetDrift]),
      [[1, 1200, true]],
    );

    assert.match(ok(await runIn(['drift', 'fraud', '--history', ...url])), /No drift reports stored for fraud yet/);
    await srv.sy.monitoring.evaluateDrift();
    const hist = ok(await runIn(['drift', 'fraud', '--history', '--version', '1', '--since', '1h', ...url]));
    const h = rows(hist);
    assert.equal(h.length, 1);
    assert.deepEqual(h[0]!.slice(1, 6), ['1', '1200', 'yes', '100%', '64']);
    assert.match(hist, /1 report, newest first/);
  });

  it('alerts: set, rules, status, firing with a signed webhook, events, delete', async () => {
    assert.match(ok(await runIn(['alerts', ...url])), /No alert rules/);
    const set = ok(
      await runIn([
        'alerts',
        'set',
        'fraud-drift',
        '--kind',
        'drift',
        '--model',
        'fraud',
        '--threshold',
        '0.3',
        '--webhook',
        hook.url,
        '--secret',
        's3cret',
        '--description',
        'input drift',
        ...url,
      ]),
    );
    assert.match(set, /Alert rule fraud-drift set: fires when the share of drifted features of fraud is above 0\.3 at once; webhook .*\/hook \(HMAC-signed\)/);
    ok(
      await runIn([
        'alerts',
        'set',
        'fraud-p99',
        '--kind',
        'latency_p99',
        '--model',
        'fraud',
        '--version',
        '1',
        '--threshold',
        '5000',
        '--for',
        '1m',
        '--disabled',
        ...url,
      ]),
    );
    ok(
      await runIn([
        'alerts',
        'set',
        'fraud-missing',
        '--kind',
        'quality',
        '--model',
        'fraud',
        '--feature',
        'features[3]',
        '--metric',
        'nan_rate',
        '--threshold',
        '0.05',
        ...url,
      ]),
    );

    const rules = rows(ok(await runIn(['alerts', 'rules', ...url])));
    assert.deepEqual(
      rules.map((r) => r.slice(0, 10)),
      [
        ['fraud-drift', 'drift', 'fraud', 'any', '-', '-', '0.3', '0', hook.url, 'yes'],
        ['fraud-missing', 'quality', 'fraud', 'any', 'features[3]', 'nan_rate', '0.05', '0', '-', 'yes'],
        ['fraud-p99', 'latency_p99', 'fraud', '1', '-', '-', '5000', '60 s', '-', 'no'],
      ],
    );
    const rj = ok(await runIn(['alerts', 'rules', '--json', ...url]));
    assert.ok(!rj.includes('s3cret'), 'the secret is never shown');

    const idle = rows(ok(await runIn(['alerts', 'status', ...url])));
    assert.deepEqual(
      idle.map((r) => r.slice(0, 4)),
      [
        ['fraud-drift', 'inactive', '-', '-'],
        ['fraud-missing', 'inactive', '-', '-'],
        ['fraud-p99', 'inactive', '-', '-'],
      ],
    );

    await srv.sy.monitoring.alerts.evaluate();
    await srv.sy.monitoring.alerts.idle();
    const firing = ok(await run(['monitor', 'alerts', ...url])); // the default subcommand, in the binary
    const fr = rows(firing).find((r) => r[0] === 'fraud-drift');
    assert.deepEqual([fr?.[1], fr?.[3], fr?.[4]], ['firing', '1', '> 0.3 at once']);
    assert.deepEqual(
      rows(firing)
        .find((r) => r[0] === 'fraud-missing')
        ?.slice(1, 4),
      ['inactive', '-', '0'],
    );
    assert.equal(hook.received.length, 1);
    const msg = hook.received[0]!;
    assert.equal((JSON.parse(msg.body) as { state: string }).state, 'firing');
    assert.ok(verifyWebhook('s3cret', String(msg.headers['x-switchyard-timestamp']), String(msg.headers['x-switchyard-signature']), msg.body));

    assert.match(ok(await runIn(['alerts', 'delete', 'fraud-drift', ...url])), /Deleted alert rule fraud-drift/);
    await srv.sy.monitoring.alerts.idle();
    const events = rows(ok(await runIn(['alerts', 'events', '--rule', 'fraud-drift', ...url])));
    assert.deepEqual(
      events.map((e) => [e[2], e[3], e[5]]),
      [
        ['fraud-drift', 'resolved', 'delivered (HTTP 204 after 1 attempt)'],
        ['fraud-drift', 'firing', 'delivered (HTTP 204 after 1 attempt)'],
      ],
    );
    assert.match(events[0]![6]!, /rule deleted/);
    const one = JSON.parse(ok(await runIn(['alerts', 'events', '--limit', '1', '--json', ...url]))) as { events: Array<{ state: string }> };
    assert.deepEqual(
      one.events.map((e) => e.state),
      ['resolved'],
    );
    assert.deepEqual(
      rows(ok(await runIn(['alerts', 'rules', ...url]))).map((r) => r[0]),
      ['fraud-missing', 'fraud-p99'],
    );
  });

  it('profile delete stops drift monitoring', async () => {
    assert.match(ok(await runIn(['profile', 'delete', 'fraud', '1', ...url])), /Removed the reference profile of fraud version 1/);
    assert.match(ok(await runIn(['drift', 'fraud', ...url])), /No version of fraud has a reference profile/);
    fails(await runIn(['profile', 'show', 'fraud', '1', ...url]), /^switchyard: 404 .*no reference profile/);
  });

  it('fails with the server message or a clear message on bad input (exit 1)', async () => {
    // The binary: exit status and message.
    fails(await run(['monitor', 'drift', 'nosuch', ...url]), /^switchyard: 404 .*nosuch/);
    fails(await run(['monitor', 'predictions', '--format', 'xml', ...url]), /--format.*xml.*json, jsonl, csv/);
    const bad = join(srv.dir, 'bad.csv');
    await writeFile(bad, 'a,b\n1,2,3\n');
    const cases: Array<[string[], RegExp]> = [
      [['profile', 'set', 'nosuch', '1', '--file', bad], /^switchyard: 404 .*nosuch/],
      [['profile', 'set', 'fraud', '1', '--file', bad], /^switchyard: 400 .*line 2: expected 2 fields, got 3/],
      [['profile', 'set', 'fraud', '1', '--file', join(srv.dir, 'missing.csv')], /^switchyard: cannot read .*missing\.csv/],
      [['profile', 'set', 'fraud', '1'], /either with --file .* or with --from-log/],
      [['profile', 'set', 'fraud', '1', '--file', bad, '--from-log'], /either with --file .* or with --from-log/],
      [['profile', 'set', 'fraud', '1', '--file', bad, '--limit', '5'], /--limit only apply with --from-log/],
      [['profile', 'set', 'fraud', '1', '--file', join(srv.dir, 'data.txt')], /cannot tell the format of .*data\.txt/],
      [['drift', 'fraud', '--version', '7'], /^switchyard: 404 /],
      [['drift', 'fraud', '--limit', '5'], /--limit only apply with --history/],
      [
        ['alerts', 'set', 'x', '--kind', 'quality', '--model', 'fraud', '--threshold', '2'],
        /^switchyard: 400 invalid alert rule: threshold: a rate: at most 1/,
      ],
      [
        ['alerts', 'set', 'x', '--kind', 'drift', '--model', 'fraud', '--threshold', '1', '--metric', 'psi'],
        /^switchyard: 400 .*metric: only for feature_drift and quality rules/,
      ],
      [
        ['alerts', 'set', 'x', '--kind', 'drift', '--model', 'fraud', '--threshold', '1', '--secret', 's'],
        /--secret signs webhook deliveries: it needs --webhook/,
      ],
      [['alerts', 'set', 'x', '--kind', 'drift', '--model', 'fraud'], /--threshold <x>.*not specified/],
      [['alerts', 'set', 'x', '--kind', 'nope', '--model', 'fraud', '--threshold', '1'], /--kind.*nope.*drift, feature_drift/],
      [['alerts', 'set', 'x', '--kind', 'drift', '--model', 'fraud', '--threshold', '-1'], /--threshold.*must be a number ≥ 0/],
      [['alerts', 'delete', 'nosuch'], /^switchyard: 404 .*nosuch/],
      [['predictions', '--limit', '0'], /--limit must be a positive integer/],
      [['predictions', '--since', 'yesterday'], /--since.*ISO-8601 time .* or a duration such as 500ms, 30s, 15m, 2h or 7d ago/],
      [['predictions', '--output', join(srv.dir, 'out.txt')], /cannot tell the format of .*out\.txt/],
      [['predictions', '--format', 'csv', '--json'], /--json .* cannot be combined with --format/],
    ];
    for (const [args, re] of cases) fails(await runIn([...args, ...url]), re);
  });
});
