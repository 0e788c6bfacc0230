/**
 * `switchyard tenants …` against a running server with authentication on: create, list, keys (create and
 * list), share, usage, revoke — and the key it printed works until revoked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';
import { runCli, ok, type Run } from './cli-helpers.js';

const run = (args: string[], env: Record<string, string> = {}): Promise<Run> => runCli(args, { env: { SWITCHYARD_API_KEY: ADMIN, ...env } });
const ADMIN = 'cli-test-admin-key-0123456789abcdef';

describe('switchyard tenants CLI', () => {
  let srv: TestServer;
  const infer = (key: string) =>
    fetch(`${srv.url}/v2/models/fraud/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 1) }] }),
    });

  before(async () => {
    srv = await startSwitchyard({ fraud: { versions: { 1: mlp(3) } } }, { listen: true, config: { adminKey: ADMIN } });
  });
  after(() => srv.close());

  it('documents every subcommand in --help', async () => {
    const help = ok(await run(['tenants', '--help']));
    for (const c of ['create', 'list', 'keys', 'revoke', 'share', 'usage']) assert.match(help, new RegExp(`\\b${c}\\b`));
    assert.match(ok(await run(['tenants', 'keys', '--help'])), /--scopes/);
  });

  it('creates a tenant and a key, shares a model, reports usage, revokes the key', async () => {
    const url = ['--url', srv.url];
    assert.match(
      ok(await run(['tenants', 'create', 'acme', '--tier', 'premium', '--rps', '50', '--daily-quota', '1000', '--rpm', '600', '--tpm', '90000', ...url])),
      /Created tenant acme \(tier premium/,
    );
    const list = ok(await run(['tenants', 'list', ...url]));
    assert.match(list, /acme/);
    assert.match(list, /rps=50/);
    assert.match(list, /rpm=600, tpm=90000/);
    const created = ok(await run(['tenants', 'keys', 'acme', '--create', '--scopes', 'infer,read', '--name', 'ci', '--expires', '30d', ...url]));
    const key = /^(sy_[a-z2-7]{12}_\S+)$/m.exec(created)?.[1];
    assert.ok(key, `a key is printed: ${created}`);
    const id = key.slice(0, 15);
    assert.equal((await infer(key)).status, 404, 'not shared yet');
    assert.match(ok(await run(['tenants', 'share', 'fraud', 'acme', ...url])), /shared with acme/);
    assert.equal((await infer(key)).status, 200, 'shared');
    const keys = ok(await run(['tenants', 'keys', 'acme', ...url]));
    assert.match(keys, new RegExp(`${id}.*infer,read.*active`));
    assert.ok(!keys.includes(key.slice(16)), 'listings never show the secret');
    const usage = JSON.parse(ok(await run(['tenants', 'usage', '--tenant', 'acme', '--group-by', 'total', '--json', ...url]))) as {
      usage: Array<{ model: string; requests: number }>;
    };
    assert.deepEqual(
      usage.usage.map((u) => [u.model, u.requests]),
      [['fraud', 1]],
    );
    assert.match(ok(await run(['tenants', 'revoke', id, ...url])), new RegExp(`Revoked API key ${id} of tenant acme`));
    assert.equal((await infer(key)).status, 401, 'revoked');
    assert.match(ok(await run(['tenants', 'keys', 'acme', ...url])), /revoked/);
  });

  it('fails with a clear message without a valid key, and on bad input', async () => {
    const r = await run(['tenants', 'list', '--url', srv.url], { SWITCHYARD_API_KEY: '' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /switchyard: 401 missing Authorization header/);
    const bad = await run(['tenants', 'create', 'Bad.Name', '--url', srv.url]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /400 .*name/);
    const scope = await run(['tenants', 'keys', 'acme', '--create', '--scopes', 'root', '--url', srv.url]);
    assert.equal(scope.code, 1);
    assert.match(scope.stderr, /unknown scope "root"/);
  });
});
