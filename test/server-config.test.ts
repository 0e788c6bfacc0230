/**
 * The server option table: precedence defaults < config file < environment < flags, config-file keys (camelCase
 * or the flag's kebab-case), text parsing (bytes, booleans), errors naming the setting and where its value came
 * from, and the docs listing every option with its flag and env var.
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadServerConfig, optionEnv, optionFlag, SERVER_DEFAULTS, SERVER_OPTIONS } from '../src/config/index.js';

describe('server configuration', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'sy-config-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const file = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  it('defaults come from the table and are frozen', () => {
    const c = loadServerConfig({}, {});
    assert.deepEqual(c, SERVER_DEFAULTS);
    assert.equal(c.port, 8000);
    assert.equal(c.ui, true);
    assert.ok(Object.isFrozen(c));
  });

  it('precedence: defaults < config file < env < flags, per key', async () => {
    const cfg = await file('a.yaml', 'port: 9001\nload-wait-ms: 1234\nlogLevel: warn\nmemory-budget: 2G\nui: false\nhost: 0.0.0.0\ninsecure: true\n');
    const env = { SWITCHYARD_PORT: '9002', SWITCHYARD_LOG_LEVEL: 'debug', SWITCHYARD_UI: '1' };
    const c = loadServerConfig({ config: cfg, port: 9003 }, env);
    assert.equal(c.port, 9003, 'a flag beats env and file');
    assert.equal(c.logLevel, 'debug', 'env beats the file');
    assert.equal(c.ui, true, 'env beats the file (booleans too)');
    assert.equal(c.loadWaitMs, 1234, 'the file beats the default (kebab-case key)');
    assert.equal(c.memoryBudget, 2 * 1024 ** 3, 'byte sizes with a suffix in the file');
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.grpcPort, SERVER_DEFAULTS.grpcPort, 'untouched keys keep their default');
    // The file named by the environment when no flag names one.
    assert.equal(loadServerConfig({}, { SWITCHYARD_CONFIG: cfg }).port, 9001);
    // An empty env var is unset.
    assert.equal(loadServerConfig({ config: cfg }, { SWITCHYARD_PORT: '' }).port, 9001);
  });

  it('env values are parsed by the option type: numbers, byte sizes, booleans', () => {
    const c = loadServerConfig({}, { SWITCHYARD_MEMORY_BUDGET: '512M', SWITCHYARD_AUTH: 'yes', SWITCHYARD_MAX_BODY_MB: '1.5', SWITCHYARD_UI: 'off' });
    assert.equal(c.memoryBudget, 512 * 1024 ** 2);
    assert.equal(c.auth, true);
    assert.equal(c.maxBodyMb, 1.5);
    assert.equal(c.ui, false);
  });

  it('bad values name the setting and where the value came from', async () => {
    const cfg = await file('bad.yaml', 'port: 70000\n');
    assert.throws(
      () => loadServerConfig({ config: cfg }, {}),
      (e: Error & { code?: string }) => e.code === 'SY_ERR_CONFIG_INVALID' && /port \(config file .*bad\.yaml\)/.test(e.message),
    );
    assert.throws(() => loadServerConfig({}, { SWITCHYARD_PORT: 'abc' }), /port \(SWITCHYARD_PORT\)/);
    assert.throws(() => loadServerConfig({ logLevel: 'loud' }, {}), /logLevel \(--log-level\)/);
    const unknown = await file('unknown.yaml', 'prot: 1\n');
    assert.throws(() => loadServerConfig({ config: unknown }, {}), /unknown option "prot"/);
    const list = await file('list.yaml', '- 1\n');
    assert.throws(() => loadServerConfig({ config: list }, {}), /must be a mapping/);
    assert.throws(() => loadServerConfig({ config: join(dir, 'missing.yaml') }, {}), /cannot read config file/);
  });

  it('flags and env vars follow from the key; docs/configuration.md lists every option', async () => {
    assert.equal(optionFlag('grpcMaxMessageMb'), 'grpc-max-message-mb');
    assert.equal(optionEnv('s3Endpoint'), 'SWITCHYARD_S3_ENDPOINT');
    const docs = await readFile(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    for (const [key, o] of Object.entries(SERVER_OPTIONS)) {
      const flag = o.default === true ? `--no-${optionFlag(key)}` : `--${optionFlag(key)}`;
      assert.ok(docs.includes(`\`${flag}`), `docs/configuration.md lists ${flag}`);
      assert.ok(docs.includes(optionEnv(key)), `docs/configuration.md lists ${optionEnv(key)}`);
    }
  });
});
