/**
 * The persisted model registry against real SQLite (temp file) and real Postgres (a unique schema per run):
 * CRUD, versions, aliases and their history, archive rules, tags, concurrent and explicit version numbers,
 * artifact validation with real onnxruntime, artifact dedup, change events, and restart.
 * Postgres must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { isSwitchyardError } from '../src/errors.js';
import { Registry } from '../src/registry/index.js';
import type { RegistryEvent } from '../src/registry/index.js';
import { openDatabase } from '../src/storage/index.js';
import { mlp } from '../tools/onnx/zoo.js';
import { inspectOnnx, PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';

const inspect = inspectOnnx;

async function rejectsWith(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isSwitchyardError(e), `expected a SwitchyardError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

interface Target {
  url: string;
  dir: string;
  cleanup(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const root = await mkdtemp(join(tmpdir(), 'sy-registry-'));
  return { url: `sqlite:${join(root, 'db', 'registry.db')}`, dir: join(root, 'artifacts'), cleanup: () => rm(root, { recursive: true, force: true }) };
}

async function postgresTarget(): Promise<Target> {
  const root = await mkdtemp(join(tmpdir(), 'sy-registry-pg-'));
  const schema = pgSchema();
  return {
    url: schema.url,
    dir: join(root, 'artifacts'),
    async cleanup() {
      await schema.drop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

const ACTOR = 'alice';

function registrySuite(dialect: 'sqlite' | 'postgres', makeTarget: () => Promise<Target>): void {
  let target: Target;
  let reg: Registry;
  const open = (): Promise<Registry> => Registry.open({ databaseUrl: target.url, artifactDir: target.dir, inspect });

  before(async () => {
    target = await makeTarget();
    reg = await open();
    assert.equal(reg.dialect, dialect);
  });
  after(async () => {
    await reg?.close();
    await target?.cleanup();
  });

  it('creates, reads, lists, updates and deletes models', async () => {
    const m = await reg.createModel({ name: 'crud', description: 'd', owner: 'team-a', tags: { t: '1' }, pinned: true, config: { max_batch_size: 8 } }, ACTOR);
    assert.equal(m.name, 'crud');
    assert.equal(m.latestVersion, 0);
    assert.deepEqual(m.config, { max_batch_size: 8 });
    assert.equal(m.pinned, true);
    assert.equal(m.loadPolicy, 'preload');
    assert.match(m.createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual(await reg.getModel('crud'), m);
    await reg.createModel({ name: 'crud-b' }, ACTOR);
    assert.deepEqual(
      (await reg.listModels()).map((x) => x.name).filter((n) => n.startsWith('crud')),
      ['crud', 'crud-b'],
    );

    await rejectsWith(reg.createModel({ name: 'crud' }, ACTOR), 'SY_ERR_REGISTRY_CONFLICT', /crud/);
    await rejectsWith(reg.createModel({ name: '-bad name' }, ACTOR), 'SY_ERR_BAD_REQUEST');
    await rejectsWith(reg.createModel({ name: 'cfg', config: { max_batch_sizes: 3 } }, ACTOR), 'SY_ERR_BAD_REQUEST', /max_batch_sizes/);
    await rejectsWith(reg.getModel('nope'), 'SY_ERR_REGISTRY_NOT_FOUND', /nope/);

    await sleep(3);
    const u = await reg.updateModel('crud', { description: 'new', loadPolicy: 'lazy', config: { instances: 2 } }, 'bob');
    assert.equal(u.description, 'new');
    assert.equal(u.loadPolicy, 'lazy');
    assert.deepEqual(u.config, { instances: 2 });
    assert.equal(u.owner, 'team-a');
    assert.ok(u.updatedAt > m.updatedAt);
    await rejectsWith(reg.updateModel('crud', { config: { instances: 0 } }, ACTOR), 'SY_ERR_BAD_REQUEST', /instances/);
    await rejectsWith(reg.updateModel('ghost', { description: 'x' }, ACTOR), 'SY_ERR_REGISTRY_NOT_FOUND');

    await reg.deleteModel('crud-b', 'carol');
    await rejectsWith(reg.getModel('crud-b'), 'SY_ERR_REGISTRY_NOT_FOUND');
    const ev = await reg.events({ model: 'crud-b' });
    assert.deepEqual(
      ev.map((e) => [e.type, e.actor]),
      [
        ['model_created', ACTOR],
        ['model_deleted', 'carol'],
      ],
    );
    const upd = (await reg.events({ model: 'crud' })).find((e) => e.type === 'model_updated');
    assert.equal(upd?.actor, 'bob');
  });

  it('pushes versions with signatures, lists, gets and resolves them', async () => {
    const v1 = await reg.pushVersion(
      'scorer',
      Buffer.from(mlp(1)),
      { description: 'first', metrics: { auc: 0.91 }, params: { lr: '0.1' }, lineage: { dataset: 'ds1' } },
      ACTOR,
    );
    assert.equal(v1.version, 1);
    assert.equal(v1.status, 'ready');
    assert.equal(v1.createdBy, ACTOR);
    assert.deepEqual(v1.signature, {
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 64] }],
      outputs: [{ name: 'score', datatype: 'FP32', shape: [-1, 1] }],
    });
    assert.deepEqual(v1.metrics, { auc: 0.91 });
    assert.deepEqual(v1.lineage, { dataset: 'ds1' });
    assert.match(v1.artifact.uri, /^file:\/\//);
    assert.match(v1.artifact.sha256, /^[0-9a-f]{64}$/);
    const v2 = await reg.pushVersion('scorer', Readable.from([Buffer.from(mlp(2))]), {}, ACTOR);
    assert.equal(v2.version, 2);
    assert.equal((await reg.getModel('scorer')).latestVersion, 2);
    assert.deepEqual(
      (await reg.listVersions('scorer')).map((v) => v.version),
      [1, 2],
    );
    assert.deepEqual(await reg.getVersion('scorer', 1), v1);
    assert.deepEqual(await reg.resolveVersion('scorer', '2'), v2);
    const path = await reg.artifactPath(v1);
    assert.deepEqual(await inspect(path), v1.signature);
    await rejectsWith(reg.getVersion('scorer', 9), 'SY_ERR_REGISTRY_NOT_FOUND', /version 9/);
    await rejectsWith(reg.resolveVersion('scorer', 'nosuch'), 'SY_ERR_REGISTRY_NOT_FOUND', /nosuch/);
    await rejectsWith(reg.pushVersion('absent', Buffer.from(mlp(3)), { createModel: false }, ACTOR), 'SY_ERR_REGISTRY_NOT_FOUND', /absent/);
    const ev = await reg.events({ model: 'scorer' });
    assert.deepEqual(
      ev.map((e) => `${e.type}:${e.version}`),
      ['model_created:null', 'version_created:1', 'version_created:2'],
    );
    assert.ok(ev.every((e, i) => i === 0 || e.id > ev[i - 1]!.id));
  });

  it('moves and removes aliases and answers as-of queries from the history', async () => {
    await reg.pushVersion('aliased', Buffer.from(mlp(11)), {}, ACTOR);
    await reg.pushVersion('aliased', Buffer.from(mlp(12)), {}, ACTOR);
    await reg.pushVersion('aliased', Buffer.from(mlp(13)), {}, ACTOR);
    const t0 = new Date().toISOString();
    await sleep(5);
    assert.deepEqual(await reg.setAlias('aliased', 'production', 1, ACTOR), { from: null, to: 1 });
    await sleep(5);
    const t1 = new Date().toISOString();
    await sleep(5);
    assert.deepEqual(await reg.setAlias('aliased', 'production', 2, 'bob'), { from: 1, to: 2 });
    await sleep(5);
    const t2 = new Date().toISOString();
    await sleep(5);
    const before = (await reg.events({ model: 'aliased' })).length;
    assert.deepEqual(await reg.setAlias('aliased', 'production', 2, ACTOR), { from: 2, to: 2 });
    assert.equal((await reg.events({ model: 'aliased' })).length, before, 'an unchanged alias appends no event');
    await reg.setAlias('aliased', 'staging', 3, ACTOR);
    assert.deepEqual((await reg.getModel('aliased')).aliases, { production: 2, staging: 3 });
    assert.equal((await reg.resolveVersion('aliased', 'production')).version, 2);
    await reg.removeAlias('aliased', 'production', ACTOR);
    await sleep(5);
    const t3 = new Date().toISOString();

    assert.equal(await reg.aliasAt('aliased', 'production', t0), null);
    assert.equal(await reg.aliasAt('aliased', 'production', t1), 1);
    assert.equal(await reg.aliasAt('aliased', 'production', t2), 2);
    assert.equal(await reg.aliasAt('aliased', 'production', t3), null);
    assert.equal(await reg.aliasAt('aliased', 'staging', t3), 3);
    await rejectsWith(reg.aliasAt('aliased', 'production', 'yesterday'), 'SY_ERR_BAD_REQUEST');

    const moves = (await reg.events({ model: 'aliased' })).filter((e) => e.alias === 'production');
    assert.deepEqual(
      moves.map((e) => [e.type, e.fromVersion, e.toVersion, e.actor]),
      [
        ['alias_moved', null, 1, ACTOR],
        ['alias_moved', 1, 2, 'bob'],
        ['alias_removed', 2, null, ACTOR],
      ],
    );
    assert.deepEqual((await reg.getModel('aliased')).aliases, { staging: 3 });
    await rejectsWith(reg.removeAlias('aliased', 'production', ACTOR), 'SY_ERR_REGISTRY_NOT_FOUND', /production/);
    await rejectsWith(reg.setAlias('aliased', '123', 1, ACTOR), 'SY_ERR_BAD_REQUEST');
    await rejectsWith(reg.setAlias('aliased', 'x', 99, ACTOR), 'SY_ERR_REGISTRY_NOT_FOUND');
    await reg.setVersionStatus('aliased', 1, 'failed', 'warmup failed', ACTOR);
    const v1 = await reg.getVersion('aliased', 1);
    assert.equal(v1.status, 'failed');
    assert.equal(v1.statusReason, 'warmup failed');
    await rejectsWith(reg.setAlias('aliased', 'canary', 1, ACTOR), 'SY_ERR_REGISTRY_CONFLICT', /not ready/);
    const st = (await reg.events({ model: 'aliased' })).filter((e) => e.type === 'version_status');
    assert.deepEqual(
      st.map((e) => [e.version, e.value]),
      [[1, 'failed']],
    );
  });

  it('archives versions only when no alias points at them', async () => {
    await reg.pushVersion('arch', Buffer.from(mlp(21)), {}, ACTOR);
    await reg.pushVersion('arch', Buffer.from(mlp(22)), {}, ACTOR);
    await reg.setAlias('arch', 'prod', 1, ACTOR);
    await rejectsWith(reg.archiveVersion('arch', 1, ACTOR), 'SY_ERR_REGISTRY_CONFLICT', /"prod"/);
    await reg.setAlias('arch', 'prod', 2, ACTOR);
    const a = await reg.archiveVersion('arch', 1, ACTOR);
    assert.ok(a.archivedAt !== null);
    assert.deepEqual(
      (await reg.listVersions('arch')).map((v) => v.version),
      [2],
    );
    assert.deepEqual(
      (await reg.listVersions('arch', { includeArchived: true })).map((v) => v.version),
      [1, 2],
    );
    await rejectsWith(reg.setAlias('arch', 'prod', 1, ACTOR), 'SY_ERR_REGISTRY_CONFLICT', /archived/);
    assert.equal((await reg.getVersion('arch', 1)).archivedAt, a.archivedAt);
    const ev = (await reg.events({ model: 'arch' })).filter((e) => e.type === 'version_archived');
    assert.deepEqual(
      ev.map((e) => e.version),
      [1],
    );
  });

  it('sets and removes model and version tags', async () => {
    await reg.pushVersion('tagged', Buffer.from(mlp(31)), { tags: { from: 'push' } }, ACTOR);
    await reg.setTag('tagged', null, 'team', 'fraud', ACTOR);
    await reg.setTag('tagged', 1, 'validated', 'yes', ACTOR);
    assert.deepEqual((await reg.getModel('tagged')).tags, { team: 'fraud' });
    assert.deepEqual((await reg.getVersion('tagged', 1)).tags, { from: 'push', validated: 'yes' });
    await reg.removeTag('tagged', 1, 'from', ACTOR);
    await reg.removeTag('tagged', null, 'team', ACTOR);
    assert.deepEqual((await reg.getModel('tagged')).tags, {});
    assert.deepEqual((await reg.getVersion('tagged', 1)).tags, { validated: 'yes' });
    await rejectsWith(reg.removeTag('tagged', null, 'team', ACTOR), 'SY_ERR_REGISTRY_NOT_FOUND', /team/);
    await rejectsWith(reg.setTag('tagged', null, '', 'x', ACTOR), 'SY_ERR_BAD_REQUEST');
    await rejectsWith(reg.setTag('tagged', null, 'k'.repeat(129), 'x', ACTOR), 'SY_ERR_BAD_REQUEST');
    await rejectsWith(reg.setTag('tagged', 7, 'k', 'x', ACTOR), 'SY_ERR_REGISTRY_NOT_FOUND');
    const ev = (await reg.events({ model: 'tagged' })).filter((e) => e.type.startsWith('tag_'));
    assert.deepEqual(
      ev.map((e) => [e.type, e.version, e.key, e.value]),
      [
        ['tag_set', null, 'team', 'fraud'],
        ['tag_set', 1, 'validated', 'yes'],
        ['tag_removed', 1, 'from', null],
        ['tag_removed', null, 'team', null],
      ],
    );
  });

  it('allocates unique, contiguous numbers to concurrent pushes', async () => {
    const pushed = await Promise.all(Array.from({ length: 10 }, (_, i) => reg.pushVersion('busy', Buffer.from(mlp(100 + i)), {}, `w${i}`)));
    assert.deepEqual(
      pushed.map((v) => v.version).sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    assert.equal((await reg.getModel('busy')).latestVersion, 10);
    const ev = await reg.events({ model: 'busy' });
    assert.equal(ev.filter((e) => e.type === 'model_created').length, 1);
    assert.equal(ev.filter((e) => e.type === 'version_created').length, 10);
  });

  it('allocates unique numbers when two instances push to one store at once', async () => {
    const other = await open();
    try {
      const pushes = Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? reg : other).pushVersion('shared', Buffer.from(mlp(200 + i)), {}, `p${i}`));
      const got = (await Promise.all(pushes)).map((v) => v.version).sort((a, b) => a - b);
      assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.equal((await other.getModel('shared')).latestVersion, 10);
    } finally {
      await other.close();
    }
  });

  it('honours explicit version numbers and never reuses one', async () => {
    assert.equal((await reg.pushVersion('explicit', Buffer.from(mlp(41)), { version: 5 }, ACTOR)).version, 5);
    assert.equal((await reg.getModel('explicit')).latestVersion, 5);
    assert.equal((await reg.pushVersion('explicit', Buffer.from(mlp(42)), {}, ACTOR)).version, 6);
    await rejectsWith(reg.pushVersion('explicit', Buffer.from(mlp(43)), { version: 5 }, ACTOR), 'SY_ERR_REGISTRY_CONFLICT', /version 5/);
    assert.equal((await reg.pushVersion('explicit', Buffer.from(mlp(44)), { version: 3 }, ACTOR)).version, 3);
    assert.equal((await reg.getModel('explicit')).latestVersion, 6);
    assert.deepEqual(
      (await reg.listVersions('explicit')).map((v) => v.version),
      [3, 5, 6],
    );
    await rejectsWith(reg.pushVersion('explicit', Buffer.from(mlp(45)), { version: 0 }, ACTOR), 'SY_ERR_BAD_REQUEST');
  });

  it('rejects an artifact onnxruntime cannot load and registers nothing', async () => {
    const before = await reg.events();
    await rejectsWith(reg.pushVersion('corrupt', Buffer.from('this is not an onnx model'), {}, ACTOR), 'SY_ERR_ARTIFACT_INVALID', /"corrupt"/);
    await rejectsWith(reg.getModel('corrupt'), 'SY_ERR_REGISTRY_NOT_FOUND');
    assert.deepEqual(await reg.events(), before);
    const truncated = Buffer.from(mlp(51)).subarray(0, 200);
    await rejectsWith(reg.pushVersion('scorer', truncated, {}, ACTOR), 'SY_ERR_ARTIFACT_INVALID', /"scorer"/);
    assert.equal((await reg.getModel('scorer')).latestVersion, 2);
  });

  it('stores identical artifacts once', async () => {
    const bytes = Buffer.from(mlp(61));
    const a = await reg.pushVersion('dedup-a', bytes, {}, ACTOR);
    const b = await reg.pushVersion('dedup-b', Readable.from([bytes.subarray(0, 100), bytes.subarray(100)]), {}, ACTOR);
    assert.equal(a.artifact.sha256, b.artifact.sha256);
    assert.equal(a.artifact.uri, b.artifact.uri);
    assert.equal(a.artifact.size, bytes.length);
    const shard = join(target.dir, a.artifact.sha256.slice(0, 2));
    assert.deepEqual(
      (await readdir(shard)).filter((f) => f.startsWith(a.artifact.sha256)),
      [`${a.artifact.sha256}.onnx`],
    );
    assert.deepEqual(
      (await readdir(target.dir)).filter((f) => f.startsWith('.tmp')),
      [],
    );
    await reg.deleteModel('dedup-a', ACTOR);
    await inspect(await reg.artifactPath(b));
    const again = await reg.pushVersion('dedup-a', bytes, {}, ACTOR);
    assert.equal(again.version, 2, 'a re-created model does not reuse version numbers');
  });

  it('notifies listeners after commit and stops after unsubscribe', async () => {
    const seen: RegistryEvent[] = [];
    const off = reg.onChange((e) => seen.push(e));
    await reg.createModel({ name: 'watched' }, ACTOR);
    await reg.setTag('watched', null, 'k', 'v', ACTOR);
    await rejectsWith(reg.createModel({ name: 'watched' }, ACTOR), 'SY_ERR_REGISTRY_CONFLICT');
    assert.deepEqual(
      seen.map((e) => e.type),
      ['model_created', 'tag_set'],
    );
    assert.deepEqual(seen, await reg.events({ model: 'watched' }));
    off();
    await reg.removeTag('watched', null, 'k', ACTOR);
    assert.equal(seen.length, 2);
  });

  it('filters events by model, time and limit', async () => {
    const all = await reg.events();
    assert.ok(all.length > 20);
    assert.equal((await reg.events({ limit: 3 })).length, 3);
    assert.deepEqual(await reg.events({ limit: 3 }), all.slice(0, 3));
    const mid = all[Math.floor(all.length / 2)]!;
    const since = await reg.events({ since: mid.at });
    assert.ok(since.every((e) => e.at >= mid.at) && since.some((e) => e.id === mid.id));
    const until = await reg.events({ until: mid.at });
    assert.ok(until.every((e) => e.at <= mid.at));
    assert.ok((await reg.events({ model: 'scorer' })).every((e) => e.model === 'scorer'));
    await rejectsWith(reg.events({ limit: 0 }), 'SY_ERR_BAD_REQUEST');
  });

  it('keeps everything across a restart', async () => {
    const snap = await reg.snapshot();
    const events = await reg.events({ limit: 10_000 });
    const scorer = snap.models.find((m) => m.name === 'scorer');
    assert.deepEqual(
      scorer?.versions.map((v) => v.version),
      [1, 2],
    );
    assert.deepEqual(
      snap.models.find((m) => m.name === 'arch')?.versions.map((v) => [v.version, v.archivedAt !== null]),
      [
        [1, true],
        [2, false],
      ],
    );
    await reg.close();
    reg = await open();
    assert.deepEqual(await reg.snapshot(), snap);
    assert.deepEqual(await reg.events({ limit: 10_000 }), events);
    assert.equal((await reg.pushVersion('scorer', Buffer.from(mlp(71)), {}, ACTOR)).version, 3);
    assert.equal((await reg.resolveVersion('aliased', 'staging')).version, 3);
    await inspect(await reg.artifactPath(await reg.getVersion('scorer', 1)));
  });

  if (dialect === 'postgres') {
    it('delivers events appended by another instance to onChange', async () => {
      const other = await open();
      try {
        const seen: RegistryEvent[] = [];
        const own: RegistryEvent[] = [];
        reg.onChange((e) => seen.push(e));
        other.onChange((e) => own.push(e));
        await other.createModel({ name: 'remote' }, 'elsewhere');
        await other.setTag('remote', null, 'k', 'v', 'elsewhere');
        while (seen.filter((e) => e.model === 'remote').length < 2) await sleep(20); // no deadline: the test runner's timeout bounds a hang
        const remote = seen.filter((e) => e.model === 'remote');
        assert.deepEqual(
          remote.map((e) => [e.type, e.actor]),
          [
            ['model_created', 'elsewhere'],
            ['tag_set', 'elsewhere'],
          ],
        );
        assert.equal(own.length, 2, 'an instance hears its own events once');
      } finally {
        await other.close();
      }
    });
  }
}

describe('registry on SQLite', () => {
  registrySuite('sqlite', sqliteTarget);
});

const pgDown = await postgresReachable();
const inCi = process.env['CI'] === 'true';
if (pgDown !== null && inCi) {
  describe('registry on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else {
  describe('registry on Postgres', { skip: pgDown === null ? false : `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail` }, () => {
    registrySuite('postgres', postgresTarget);
  });
}

describe('metadata store URLs', () => {
  it('opens an in-memory SQLite database', async () => {
    const d = await openDatabase('sqlite::memory:');
    assert.equal(d.dialect, 'sqlite');
    assert.deepEqual(await d.db.selectFrom('models').selectAll().execute(), []);
    await d.close();
  });
  it('rejects an unknown scheme, naming it', async () => {
    await rejectsWith(openDatabase('mysql://localhost/x'), 'SY_ERR_CONFIG_INVALID', /mysql/);
  });
});
