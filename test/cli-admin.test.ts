/**
 * The CLI people can guess, against a real server with authentication on: `models push` waits for the load
 * and warmup and fails with the reason; a command for each admin action (model create / update / delete /
 * tag / untag / unalias, tenant show / update / delete, platform admin keys, the audit log, whoami); one
 * duration syntax; retired flags name their replacement; `--help` on every command (walked in-process).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Command } from 'commander';
import { auditCommand, whoamiCommand } from '../src/cli/admin.js';
import { durationMs, futureTimeArg, timeArg } from '../src/cli/args.js';
import { batchCommand } from '../src/cli/batch.js';
import { experimentsCommand } from '../src/cli/experiments.js';
import { featuresCommand } from '../src/cli/features.js';
import { llmCommand } from '../src/cli/llm.js';
import { migrateCommand } from '../src/cli/migrate.js';
import { modelsCommand } from '../src/cli/models.js';
import { monitorCommand } from '../src/cli/monitor.js';
import { routingCommand } from '../src/cli/routing.js';
import { tenantsCommand } from '../src/cli/tenants.js';
import { failsWarmup, mlp } from '../tools/onnx/zoo.js';
import { fails, ok, rows, runCli, type Run } from './cli-helpers.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const ADMIN = 'cli-admin-test-key-0123456789abcdef';
const run = (args: string[], env: Record<string, string> = {}): Promise<Run> => runCli(args, { env: { SWITCHYARD_API_KEY: ADMIN, ...env } });

describe('switchyard CLI: one syntax, a command for every admin action', () => {
  let srv: TestServer;
  let url: string[];
  let good: string;
  let broken: string;

  before(async () => {
    srv = await startSwitchyard({}, { listen: true, config: { adminKey: ADMIN } });
    url = ['--url', srv.url];
    good = join(srv.dir, 'good.onnx');
    broken = join(srv.dir, 'broken.onnx');
    await writeFile(good, mlp(4));
    await writeFile(broken, failsWarmup());
  });
  after(() => srv.close());

  it('--help works on every command, every command and option is described, and docs/cli.md lists every command', async () => {
    const docs = await readFile(new URL('../../docs/cli.md', import.meta.url), 'utf8');
    const groups: Command[] = [
      modelsCommand(),
      tenantsCommand(),
      routingCommand(),
      experimentsCommand(),
      featuresCommand(),
      monitorCommand(),
      batchCommand(),
      llmCommand(),
      migrateCommand(),
      auditCommand(),
      whoamiCommand(),
    ];
    let leaves = 0;
    const walk = (c: Command, path: string): void => {
      assert.ok(c.description().length > 0, `${path} has a description`);
      const help = c.helpInformation();
      assert.match(help, /-h, --help/, `${path} --help`);
      for (const o of c.options) if (!(o as { hidden?: boolean }).hidden) assert.ok(o.description.length > 0, `${path} ${o.flags} is described`);
      if (c.commands.length === 0) {
        leaves++;
        assert.ok(docs.includes(`\`switchyard ${path}`), `docs/cli.md lists switchyard ${path}`);
      }
      for (const sub of c.commands) walk(sub, `${path} ${sub.name()}`);
    };
    for (const g of groups) walk(g, g.name());
    assert.ok(leaves >= 60, `${leaves} commands walked`);
  });

  it('one duration syntax: ms, s, m, h, d for spans and for times relative to now; a bare number is refused', () => {
    assert.deepEqual(['500ms', '30s', '1.5m', '2h', '7d'].map(durationMs), [500, 30_000, 90_000, 7_200_000, 604_800_000]);
    assert.equal(durationMs('30'), null);
    assert.equal(durationMs('30 s'), null);
    const now = Date.now();
    assert.ok(Math.abs(Date.parse(timeArg('30s')) - (now - 30_000)) < 60_000, 'timeArg: 30 s ago');
    assert.ok(Math.abs(Date.parse(futureTimeArg('30s')) - (now + 30_000)) < 60_000, 'futureTimeArg: 30 s from now');
    assert.equal(futureTimeArg('2027-01-31T00:00:00Z'), '2027-01-31T00:00:00.000Z');
  });

  it('models push waits for the load and warmup: success says so, a failing warmup exits 1 with the reason', async () => {
    const okOut = ok(await run(['models', 'push', good, '--name', 'fraud', ...url]));
    assert.match(okOut, /Registered fraud version 1/);
    assert.match(okOut, /Version 1 is loaded and warmed up\./);
    assert.equal(srv.sy.manager.resolve('fraud', '1').state, 'READY');

    const bad = await run(['models', 'push', broken, '--name', 'fraud', ...url]);
    fails(bad, /fraud version 2 was registered but failed to load: .*warmup failed/);
    assert.match(bad.stdout, /^$/, 'nothing claims success');
    // --no-wait returns once registered (exit 0), as before.
    const noWait = ok(await run(['models', 'push', broken, '--name', 'fraud', '--no-wait', ...url]));
    assert.match(noWait, /Registered fraud version 3[\s\S]*Load: not waited for \(--no-wait\)/);
    fails(await run(['models', 'push', good, '--name', 'fraud', '--timeout', '10', ...url]), /--timeout must be a duration such as 500ms/);
  });

  it('model create, update, tag, untag, alias, unalias, delete', async () => {
    assert.match(
      ok(await run(['models', 'create', 'churn', '--load-policy', 'lazy', '--owner', 'growth', '-d', 'churn model', ...url])),
      /Registered model churn \(load lazy, owner growth: churn model\)/,
    );
    const lazyPush = ok(await run(['models', 'push', good, '--name', 'churn', ...url]));
    assert.match(lazyPush, /Load: lazy model: it loads on its first request\./);
    assert.match(ok(await run(['models', 'update', 'churn', '--pinned', '--config', '{"instances":1}', ...url])), /Updated model churn \(load lazy, pinned/);
    fails(await run(['models', 'update', 'churn', ...url]), /nothing to change/);
    fails(await run(['models', 'update', 'churn', '--config', '[1]', ...url]), /--config.*must be a JSON object/);

    ok(await run(['models', 'tag', 'churn', 'team=growth', 'tier=gold', ...url]));
    ok(await run(['models', 'tag', 'churn', 'stage=candidate', '--version', '1', ...url]));
    let m = JSON.parse(ok(await run(['models', 'show', 'churn', '--json', ...url]))) as {
      tags: Record<string, string>;
      versions: Array<{ tags: Record<string, string> }>;
    };
    assert.deepEqual(m.tags, { team: 'growth', tier: 'gold' });
    assert.deepEqual(m.versions[0]!.tags, { stage: 'candidate' });
    ok(await run(['models', 'untag', 'churn', 'tier', ...url]));
    ok(await run(['models', 'untag', 'churn', 'stage', '--version', '1', ...url]));
    m = JSON.parse(ok(await run(['models', 'show', 'churn', '--json', ...url])));
    assert.deepEqual(m.tags, { team: 'growth' });
    assert.deepEqual(m.versions[0]!.tags, {});

    ok(await run(['models', 'alias', 'churn', 'production', '1', ...url]));
    assert.match(ok(await run(['models', 'unalias', 'churn', 'production', ...url])), /churn alias production removed/);
    const aliases = (JSON.parse(ok(await run(['models', 'show', 'churn', '--json', ...url]))) as { aliases: Record<string, number> }).aliases;
    assert.deepEqual(aliases, {});
    fails(await run(['models', 'unalias', 'churn', 'production', ...url]), /^switchyard: 404 /);

    assert.match(ok(await run(['models', 'delete', 'churn', ...url])), /Deleted model churn/);
    fails(await run(['models', 'show', 'churn', ...url]), /^switchyard: 404 /);
  });

  it('tenant show, update (limits, weight, disable), delete; platform admin keys; whoami; the audit log', async () => {
    ok(await run(['tenants', 'create', 'beta', '--tier', 'free', ...url]));
    const shown = ok(await run(['tenants', 'show', 'beta', ...url]));
    assert.match(shown, /Tier\s*│\s*free/);
    assert.match(
      ok(await run(['tenants', 'update', 'beta', '--tier', 'premium', '--weight', '3', '--rps', '40', ...url])),
      /Updated tenant beta \(tier premium, weight 3, limits .*rps=40/,
    );
    const key = JSON.parse(ok(await run(['tenants', 'keys', 'beta', '--create', '--expires', '30s', '--json', ...url]))) as {
      key: string;
      id: string;
      expiresAt: string;
    };
    assert.ok(Math.abs(Date.parse(key.expiresAt) - Date.now()) < 120_000, '--expires 30s is accepted (one duration syntax)');
    fails(await run(['tenants', 'keys', 'beta', '--name', 'x', ...url]), /--name only apply with --create/);

    assert.match(
      ok(await run(['whoami', ...url], { SWITCHYARD_API_KEY: key.key })),
      new RegExp(`Tenant beta \\(tier premium\\), as beta/${key.id} \\(key ${key.id}, scopes infer,read, expires `),
    );
    assert.match(ok(await run(['whoami', ...url])), /Platform admin/);
    assert.match(ok(await run(['tenants', 'update', 'beta', '--disabled', ...url])), /, disabled\)/);
    fails(await run(['whoami', ...url], { SWITCHYARD_API_KEY: key.key }), /^switchyard: 40[13] /);

    const admin = JSON.parse(ok(await run(['tenants', 'admin-keys', '--create', '--name', 'ops', '--json', ...url]))) as {
      id: string;
      key: string;
      scopes: string[];
    };
    assert.deepEqual(admin.scopes, ['admin']);
    assert.ok(rows(ok(await run(['tenants', 'admin-keys', ...url]))).some((r) => r[0] === admin.id && r[1] === 'ops'));
    assert.match(ok(await run(['whoami', ...url], { SWITCHYARD_API_KEY: admin.key })), /Platform admin/);

    assert.match(ok(await run(['tenants', 'delete', 'beta', ...url])), /Deleted tenant beta/);
    fails(await run(['tenants', 'show', 'beta', ...url]), /^switchyard: 404 /);

    const audit = rows(ok(await run(['audit', '--since', '1h', '--limit', '1000', ...url]))).filter((r) => r[5] === 'tenant=beta');
    const actions = audit.map((r) => r[4]);
    for (const a of ['PATCH /api/v1/tenants/:tenant', 'DELETE /api/v1/tenants/:tenant']) assert.ok(actions.includes(a), `${a} in ${actions.join(', ')}`);
    const deletes = rows(ok(await run(['audit', '--action', 'DELETE /api/v1/tenants*', ...url])));
    assert.deepEqual(
      deletes.map((r) => [r[4], r[5], r[6]]),
      [['DELETE /api/v1/tenants/:tenant', 'tenant=beta', '204']],
    );
    const limited = JSON.parse(ok(await run(['audit', '--limit', '1', '--json', ...url]))) as { entries: Array<{ id: number }> };
    assert.equal(limited.entries.length, 1);
    const older = JSON.parse(ok(await run(['audit', '--limit', '1', '--before', String(limited.entries[0]!.id), '--json', ...url]))) as {
      entries: Array<{ id: number }>;
    };
    assert.ok(older.entries[0]!.id < limited.entries[0]!.id, 'paging with --before');
  });

  it('retired flags are refused with their replacement; -o/--output everywhere a file is written', async () => {
    fails(
      await run(['monitor', 'alerts', 'set', 'r', '--kind', 'error_rate', '--model', 'm', '--threshold', '1', '--for-ms', '1000', ...url]),
      /--for-ms.*was replaced by --for <duration>/,
    );
    fails(await run(['features', 'export', '--entities', 'e.csv', '--service', 's', '--out', 'x.csv', ...url]), /--out.*was replaced by -o, --output <file>/);
    fails(await run(['tenants', 'usage', '--from', '2026-01-01T00:00:00Z', ...url]), /--from.*was replaced by --since <time>/);
    for (const cmd of [
      ['features', 'export'],
      ['monitor', 'predictions'],
      ['batch', 'download'],
    ]) {
      assert.match(ok(await run([...cmd, '--help'])), /-o, --output <file>/, cmd.join(' '));
    }
  });
});
