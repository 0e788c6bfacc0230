import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mlp } from '../tools/onnx/zoo.js';
import { startAdminApp, type AdminTestApp } from './registry-helpers.js';
import { runCli, ok, type Run } from './cli-helpers.js';

const run = (args: string[], env: Record<string, string> = {}): Promise<Run> => runCli(args, { env });

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((res) => s.listen(0, '127.0.0.1', res));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

const SUBCOMMANDS = ['push', 'list', 'show', 'alias', 'history', 'archive'];

describe('switchyard models CLI', () => {
  let t: AdminTestApp;
  let url: string;
  let v1File: string;
  let v2File: string;
  let badFile: string;

  before(async () => {
    t = await startAdminApp({ listen: true });
    url = t.url;
    v1File = join(t.dir, 'v1.onnx');
    v2File = join(t.dir, 'v2.onnx');
    badFile = join(t.dir, 'bad.onnx');
    await writeFile(v1File, mlp(7));
    await writeFile(v2File, mlp(8));
    await writeFile(badFile, 'not an onnx model');
  });
  after(async () => t.close());

  it('--help mentions every subcommand and each documents its options', async () => {
    const top = ok(await run(['--help']));
    assert.match(top, /models/);
    const help = ok(await run(['models', '--help']));
    for (const c of SUBCOMMANDS) assert.match(help, new RegExp(`\\b${c}\\b.*\\S`), `models --help lacks ${c}`);
    for (const c of SUBCOMMANDS) {
      const h = ok(await run(['models', c, '--help']));
      for (const flag of ['--url', '--actor', '--json']) assert.ok(h.includes(flag), `models ${c} --help lacks ${flag}`);
    }
    const push = ok(await run(['models', 'push', '--help']));
    for (const flag of ['--name', '--alias', '--tag', '--metric', '--param', '--description', '--source-run', '--dataset', '--code-ref']) {
      assert.ok(push.includes(flag), `push --help lacks ${flag}`);
    }
    assert.ok(ok(await run(['models', 'history', '--help'])).includes('--at'));
  });

  it('list with an empty registry', async () => {
    assert.match(ok(await run(['models', 'list', '--url', url])), /No registered models/);
  });

  it('push streams a file with metadata and an alias', async () => {
    const out = ok(
      await run([
        'models',
        'push',
        v1File,
        '--name',
        'fraud',
        '--alias',
        'production',
        '--tag',
        'stage=canary',
        '--tag',
        'team=risk',
        '--metric',
        'auc=0.91',
        '--param',
        'lr=0.01',
        '--description',
        'first cut',
        '--source-run',
        'run-1',
        '--dataset',
        'ds-1',
        '--code-ref',
        'abc123',
        '--url',
        url,
        '--actor',
        'alice',
      ]),
    );
    assert.match(out, /Registered fraud version 1 from v1\.onnx/);
    assert.match(out, /Alias production → 1/);
    const v = await t.registry.getVersion('fraud', 1);
    assert.deepEqual(v.tags, { stage: 'canary', team: 'risk' });
    assert.deepEqual(v.metrics, { auc: 0.91 });
    assert.deepEqual(v.params, { lr: '0.01' });
    assert.equal(v.description, 'first cut');
    assert.deepEqual(v.lineage, { sourceRun: 'run-1', dataset: 'ds-1', codeRef: 'abc123' });
    assert.equal(v.createdBy, 'alice');
    assert.equal(v.artifact.size, mlp(7).length);
    assert.equal((await t.registry.getModel('fraud')).aliases['production'], 1);
  });

  it('push --json prints the version record; SWITCHYARD_URL is honoured', async () => {
    const r = ok(await run(['models', 'push', v2File, '--name', 'fraud', '--json'], { SWITCHYARD_URL: url }));
    const v = JSON.parse(r) as { model: string; version: number; artifact: { sha256: string } };
    assert.equal(v.model, 'fraud');
    assert.equal(v.version, 2);
    assert.match(v.artifact.sha256, /^[0-9a-f]{64}$/);
  });

  it('push of a corrupt file fails with the server message; a missing file fails clearly', async () => {
    const r = await run(['models', 'push', badFile, '--name', 'fraud', '--url', url]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^switchyard: 400 .*not a loadable model/);
    assert.equal(r.stdout, '');
    assert.deepEqual(
      (await t.registry.listVersions('fraud')).map((v) => v.version),
      [1, 2],
    );
    const m = await run(['models', 'push', join(t.dir, 'missing.onnx'), '--name', 'fraud', '--url', url]);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /switchyard: cannot read .*missing\.onnx/);
    const n = await run(['models', 'push', v1File, '--url', url]);
    assert.notEqual(n.code, 0);
    assert.match(n.stderr, /--name/);
  });

  it('list shows models in a table; --json gives the raw response', async () => {
    const out = ok(await run(['models', 'list', '--url', url]));
    assert.match(out, /NAME/);
    assert.match(out, /fraud/);
    assert.match(out, /production=1/);
    const j = JSON.parse(ok(await run(['models', 'list', '--url', url, '--json']))) as { models: Array<{ name: string; latestVersion: number }> };
    assert.deepEqual(
      j.models.map((m) => [m.name, m.latestVersion]),
      [['fraud', 2]],
    );
  });

  it('show prints fields, aliases and a versions table', async () => {
    const out = ok(await run(['models', 'show', 'fraud', '--url', url]));
    const v1 = await t.registry.getVersion('fraud', 1);
    const v2 = await t.registry.getVersion('fraud', 2);
    assert.match(out, /Latest version\s*│\s*2/);
    assert.match(out, /Aliases:/);
    assert.match(out, /production\s*│\s*1/);
    assert.match(out, /Versions:/);
    for (const h of ['VERSION', 'STATUS', 'SHA256', 'SIZE', 'CREATED']) assert.ok(out.includes(h), `show lacks column ${h}`);
    assert.ok(out.includes(v1.artifact.sha256.slice(0, 12)));
    assert.ok(out.includes(v2.artifact.sha256.slice(0, 12)));
    assert.ok(!out.includes(v1.artifact.sha256), 'sha256 is shown as a prefix');
    assert.match(out, /ready/);
    assert.match(out, /KiB/);
    assert.match(out, /first cut/);
    const j = JSON.parse(ok(await run(['models', 'show', 'fraud', '--url', url, '--json']))) as { versions: unknown[] };
    assert.equal(j.versions.length, 2);
  });

  it('alias moves an alias and reports from → to', async () => {
    const out = ok(await run(['models', 'alias', 'fraud', 'production', '2', '--url', url, '--actor', 'bob']));
    assert.match(out, /fraud alias production: version 1 → version 2/);
    const n = ok(await run(['models', 'alias', 'fraud', 'staging', '1', '--url', url]));
    assert.match(n, /staging: \(unset\) → version 1/);
    const bad = await run(['models', 'alias', 'fraud', 'production', '99', '--url', url]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^switchyard: 40[49] .*99/);
    const notNum = await run(['models', 'alias', 'fraud', 'production', 'two', '--url', url]);
    assert.notEqual(notNum.code, 0);
    assert.match(notNum.stderr, /version must be a positive integer/);
  });

  it('history prints the event log, and with --at where every alias pointed then', async () => {
    const out = ok(await run(['models', 'history', 'fraud', '--url', url]));
    for (const s of ['TIME', 'EVENT', 'ACTOR', 'model_created', 'version_created', 'alias_moved', 'production: 1 → 2', 'alice', 'bob']) {
      assert.ok(out.includes(s), `history lacks ${s}:\n${out}`);
    }
    const events = await t.registry.events({ model: 'fraud' });
    const moves = events.filter((e) => e.type === 'alias_moved' && e.alias === 'production');
    assert.equal(moves.length, 2);
    const firstAt = moves[0]!.at;
    assert.notEqual(firstAt, moves[1]!.at);
    const then = ok(await run(['models', 'history', 'fraud', '--at', firstAt, '--url', url]));
    assert.match(then, new RegExp(`Aliases of fraud at ${firstAt.replace(/\./g, '\\.')}`));
    assert.match(then, /production\s*│\s*1/);
    assert.match(then, /staging\s*│\s*\(unset\)/);
    const now = JSON.parse(ok(await run(['models', 'history', 'fraud', '--at', new Date(Date.now() + 1000).toISOString(), '--url', url, '--json']))) as {
      aliases: Array<{ alias: string; version: number | null }>;
    };
    assert.deepEqual(
      now.aliases.map((a) => [a.alias, a.version]),
      [
        ['production', 2],
        ['staging', 1],
      ],
    );
    const bad = await run(['models', 'history', 'fraud', '--at', 'yesterday', '--url', url]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /ISO-8601/);
  });

  it('archive archives a version; an aliased version is refused with the server message', async () => {
    const refused = await run(['models', 'archive', 'fraud', '1', '--url', url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^switchyard: 409 .*staging/);
    ok(await run(['models', 'alias', 'fraud', 'staging', '2', '--url', url]));
    const out = ok(await run(['models', 'archive', 'fraud', '1', '--url', url]));
    assert.match(out, /Archived fraud version 1/);
    assert.notEqual((await t.registry.getVersion('fraud', 1)).archivedAt, null);
    const shown = ok(await run(['models', 'show', 'fraud', '--url', url]));
    assert.match(shown, /archived/);
  });

  it('HTTP errors print the status and message and exit 1', async () => {
    const r = await run(['models', 'show', 'nope', '--url', url]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^switchyard: 404 .*nope/);
    assert.equal(r.stdout, '');
  });

  it('connection refused exits 1 with a message naming the URL', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    for (const args of [
      ['models', 'list'],
      ['models', 'push', v1File, '--name', 'fraud'],
    ]) {
      const r = await run([...args, '--url', dead]);
      assert.equal(r.code, 1);
      assert.ok(r.stderr.includes(dead), r.stderr);
      assert.match(r.stderr, /connection refused/);
      assert.ok(!r.stderr.includes('    at '), 'no stack trace');
    }
  });
});
