/**
 * Feature store definitions: the parsers (defaults, errors naming fields), canonical entity keys, the catalog
 * (resolve, join keys, service bindings), the versioned DefinitionStore on SQLite and real Postgres (revisions,
 * unchanged puts, reference checks and 409s, deletes, history, concurrent writers), the admin routes on a bare
 * Fastify app (403 for non-platform writes, OpenAPI), and `switchyard features` (pure parts, --help, and the
 * commands against a small in-process server with the definition routes and stand-ins for the data routes).
 * Postgres must be reachable in CI (CI=true); elsewhere its suite is skipped with a message when it is not.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { featureDefinitionRoutes } from '../src/api/admin/features-defs.js';
import { registerOpenApi } from '../src/api/admin/openapi.js';
import { installErrorShape } from '../src/api/reply-error.js';
import {
  chunk,
  chunkPushId,
  entityArg,
  featuresArg,
  historyChanges,
  kindArg,
  onlineRows,
  parseApplyFile,
  parseCsv,
  parseJsonl,
  toCsv,
  typedRows,
} from '../src/cli/features.js';
import { isSwitchyardError, type ErrorCode } from '../src/errors.js';
import { buildCatalog, DEF_NAME, DefinitionStore, entityKey, parseEntity, parseService, parseView } from '../src/features/definitions.js';
import type { FeatureViewDef, WindowViewDef } from '../src/features/types.js';
import { openDatabase, type Database } from '../src/storage/index.js';
import { PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';
import { runCli, ok, type Run } from './cli-helpers.js';

type Json = Record<string, unknown>;

/** Asserts a SwitchyardError with this code whose message matches. */
function throwsCode(fn: () => unknown, code: ErrorCode, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSwitchyardError(e), `expected a SwitchyardError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

async function rejectsCode(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isSwitchyardError(e), `expected a SwitchyardError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

const user = { name: 'user', joinKeys: [{ name: 'user_id', type: 'int64' }] };
const merchant = { name: 'merchant', description: 'A shop', joinKeys: [{ name: 'merchant_id', type: 'string' }] };
const userStats = {
  name: 'user_stats',
  entities: ['user'],
  features: [
    { name: 'clicks', type: 'int64' },
    { name: 'spend', type: 'float64' },
    { name: 'country', type: 'string' },
  ],
  ttlSeconds: 3600,
};
const txWindow = {
  kind: 'window',
  name: 'tx_window',
  entities: ['user', 'merchant'],
  aggregations: [
    { name: 'tx_count_5m', fn: 'count', window: '5m' },
    { name: 'amount_sum_1h', fn: 'sum', field: 'amount', window: '1h' },
  ],
};
const fraud = {
  name: 'fraud',
  model: 'fraud_model',
  features: [
    { ref: 'user_stats:clicks', input: 'x', default: 0 },
    { ref: 'user_stats:spend', input: 'x' },
    { ref: 'tx_window:tx_count_5m', input: 'x', default: 0 },
  ],
};

describe('definition parsers', () => {
  it('DEF_NAME: lowercase, digits and _, starting with a letter, at most 63', () => {
    for (const ok of ['a', 'user_id', 'x1', 'a'.repeat(63)]) assert.match(ok, DEF_NAME);
    for (const bad of ['', '1a', '_a', 'User', 'a-b', 'a.b', 'a:b', 'a'.repeat(64)]) assert.doesNotMatch(bad, DEF_NAME);
  });

  it('parseEntity fills defaults and names each bad field', () => {
    assert.deepEqual(parseEntity(user), { name: 'user', description: '', joinKeys: [{ name: 'user_id', type: 'int64' }] });
    assert.deepEqual(parseEntity(merchant).description, 'A shop');
    throwsCode(() => parseEntity({ name: 'User', joinKeys: [] }), 'SY_ERR_BAD_REQUEST', /invalid entity "User": name: lowercase.*; joinKeys: /);
    throwsCode(() => parseEntity({ name: 'u' }), 'SY_ERR_BAD_REQUEST', /joinKeys: /);
    throwsCode(() => parseEntity({ name: 'u', joinKeys: [{ name: 'id', type: 'uuid' }] }), 'SY_ERR_BAD_REQUEST', /joinKeys\[0\]\.type: /);
    throwsCode(() => parseEntity({ ...user, extra: 1 }), 'SY_ERR_BAD_REQUEST', /extra: unknown field/);
    throwsCode(
      () => parseEntity({ name: 'u', joinKeys: [{ name: 'id', type: 'int64', nullable: true }] }),
      'SY_ERR_BAD_REQUEST',
      /joinKeys\[0\]\.nullable: unknown field/,
    );
    throwsCode(
      () =>
        parseEntity({
          name: 'u',
          joinKeys: [
            { name: 'id', type: 'int64' },
            { name: 'id', type: 'string' },
          ],
        }),
      'SY_ERR_BAD_REQUEST',
      /join key "id" appears twice/,
    );
    throwsCode(() => parseEntity({ name: 'u', joinKeys: [{ name: 'event_time', type: 'string' }] }), 'SY_ERR_BAD_REQUEST', /join key "event_time" is reserved/);
    throwsCode(() => parseEntity('user'), 'SY_ERR_BAD_REQUEST', /must be a JSON object/);
    throwsCode(() => parseEntity({ ...user, description: 5 }), 'SY_ERR_BAD_REQUEST', /description: /);
  });

  it('parseView: a feature view with defaults (kind view, no max age, online and offline)', () => {
    const v = parseView({ name: 'v', entities: ['user'], features: [{ name: 'f', type: 'bool', description: 'flag' }] });
    assert.deepEqual(v, {
      kind: 'view',
      name: 'v',
      description: '',
      entities: ['user'],
      features: [{ name: 'f', type: 'bool', description: 'flag' }],
      ttlSeconds: 0,
      online: true,
      offline: true,
    });
    const w = parseView({ ...userStats, kind: 'view', online: false }) as FeatureViewDef;
    assert.equal(w.ttlSeconds, 3600);
    assert.equal(w.online, false);
    assert.equal(w.offline, true);
    throwsCode(() => parseView({ ...userStats, ttlSeconds: -1 }), 'SY_ERR_BAD_REQUEST', /invalid feature view "user_stats": ttlSeconds: /);
    throwsCode(() => parseView({ ...userStats, ttlSeconds: 1.5 }), 'SY_ERR_BAD_REQUEST', /ttlSeconds: /);
    throwsCode(() => parseView({ ...userStats, online: 'yes' }), 'SY_ERR_BAD_REQUEST', /online: /);
    throwsCode(
      () =>
        parseView({
          ...userStats,
          features: [
            { name: 'a', type: 'int64' },
            { name: 'a', type: 'string' },
          ],
        }),
      'SY_ERR_BAD_REQUEST',
      /feature "a" appears twice/,
    );
    throwsCode(() => parseView({ ...userStats, features: [{ name: 'a', type: 'decimal' }] }), 'SY_ERR_BAD_REQUEST', /features\[0\]\.type: /);
    throwsCode(() => parseView({ ...userStats, features: [] }), 'SY_ERR_BAD_REQUEST', /features: /);
    throwsCode(() => parseView({ ...userStats, features: [{ name: 'event_time', type: 'int64' }] }), 'SY_ERR_BAD_REQUEST', /"event_time" is reserved/);
    throwsCode(() => parseView({ ...userStats, entities: ['user', 'user'] }), 'SY_ERR_BAD_REQUEST', /entity "user" appears twice/);
    throwsCode(() => parseView({ ...userStats, entities: [] }), 'SY_ERR_BAD_REQUEST', /entities: /);
    throwsCode(() => parseView({ ...userStats, kind: 'stream' }), 'SY_ERR_BAD_REQUEST', /kind: must be "view".*or "window"/);
    throwsCode(() => parseView({ ...userStats, aggregations: [] }), 'SY_ERR_BAD_REQUEST', /aggregations: unknown field/);
  });

  it('parseView: a windowed view (field required unless count, unique names, optional source)', () => {
    const w = parseView(txWindow) as WindowViewDef;
    assert.deepEqual(w, {
      kind: 'window',
      name: 'tx_window',
      description: '',
      entities: ['user', 'merchant'],
      aggregations: [
        { name: 'tx_count_5m', fn: 'count', window: '5m' },
        { name: 'amount_sum_1h', fn: 'sum', field: 'amount', window: '1h' },
      ],
    });
    assert.equal('source' in w, false);
    const nats = parseView({ ...txWindow, source: { type: 'nats', stream: 'TX', subject: 'tx.>', durable: 'sy' } }) as WindowViewDef;
    assert.deepEqual(nats.source, { type: 'nats', stream: 'TX', subject: 'tx.>', durable: 'sy' });
    const redis = parseView({ ...txWindow, source: { type: 'redis', stream: 'tx', group: 'sy' } }) as WindowViewDef;
    assert.deepEqual(redis.source, { type: 'redis', stream: 'tx', group: 'sy' });
    throwsCode(
      () => parseView({ ...txWindow, aggregations: [{ name: 'm', fn: 'mean', window: '5m' }] }),
      'SY_ERR_BAD_REQUEST',
      /invalid windowed view "tx_window": aggregations\[0\]\.field: required for mean/,
    );
    throwsCode(
      () =>
        parseView({
          ...txWindow,
          aggregations: [
            { name: 'm', fn: 'count', window: '5m' },
            { name: 'm', fn: 'count', window: '1h' },
          ],
        }),
      'SY_ERR_BAD_REQUEST',
      /aggregation "m" appears twice/,
    );
    throwsCode(
      () => parseView({ ...txWindow, aggregations: [{ name: 'm', fn: 'median', field: 'a', window: '5m' }] }),
      'SY_ERR_BAD_REQUEST',
      /aggregations\[0\]\.fn: /,
    );
    throwsCode(
      () => parseView({ ...txWindow, aggregations: [{ name: 'm', fn: 'sum', field: 'a', window: '7d' }] }),
      'SY_ERR_BAD_REQUEST',
      /aggregations\[0\]\.window: /,
    );
    throwsCode(() => parseView({ ...txWindow, source: { type: 'kafka', topic: 't' } }), 'SY_ERR_BAD_REQUEST', /source/);
    throwsCode(() => parseView({ ...txWindow, source: { type: 'nats', stream: 'TX' } }), 'SY_ERR_BAD_REQUEST', /source\.subject: .*source\.durable: /);
    throwsCode(() => parseView({ ...txWindow, features: [] }), 'SY_ERR_BAD_REQUEST', /features: unknown field/);
  });

  it('parseService: refs as view:feature, defaults (onMissing error, staleIsMissing true), unique refs', () => {
    const s = parseService(fraud);
    assert.deepEqual(s, {
      name: 'fraud',
      description: '',
      model: 'fraud_model',
      onMissing: 'error',
      staleIsMissing: true,
      features: [
        { ref: 'user_stats:clicks', input: 'x', default: 0 },
        { ref: 'user_stats:spend', input: 'x' },
        { ref: 'tx_window:tx_count_5m', input: 'x', default: 0 },
      ],
    });
    assert.equal('version' in s, false);
    const v = parseService({ name: 's', features: [{ ref: 'a:b' }], model: 'm', version: 3, onMissing: 'zero', staleIsMissing: false });
    assert.equal(v.version, 3);
    assert.equal(v.onMissing, 'zero');
    assert.equal(v.staleIsMissing, false);
    assert.deepEqual(
      parseService({
        name: 's',
        features: [
          { ref: 'a:b', default: 'x' },
          { ref: 'a:c', default: true },
        ],
      }).features.map((f) => f.default),
      ['x', true],
    );
    throwsCode(
      () => parseService({ name: 's', features: [{ ref: 'ab' }] }),
      'SY_ERR_BAD_REQUEST',
      /invalid feature service "s": features\[0\]\.ref: .*"view:feature"/,
    );
    throwsCode(() => parseService({ name: 's', features: [{ ref: 'a:b' }, { ref: 'a:b' }] }), 'SY_ERR_BAD_REQUEST', /feature "a:b" appears twice/);
    throwsCode(() => parseService({ name: 's', features: [{ ref: 'a:b' }], version: 2 }), 'SY_ERR_BAD_REQUEST', /version: needs "model"/);
    throwsCode(() => parseService({ name: 's', features: [{ ref: 'a:b' }], model: 'm', version: 0 }), 'SY_ERR_BAD_REQUEST', /version: /);
    throwsCode(() => parseService({ name: 's', features: [{ ref: 'a:b', default: [1] }] }), 'SY_ERR_BAD_REQUEST', /features\[0\]\.default: /);
    throwsCode(() => parseService({ name: 's', features: [{ ref: 'a:b' }], onMissing: 'skip' }), 'SY_ERR_BAD_REQUEST', /onMissing: /);
    throwsCode(() => parseService({ name: 's', features: [] }), 'SY_ERR_BAD_REQUEST', /features: /);
    throwsCode(() => parseService({ name: 's', features: [{ ref: 'a:b' }], model: 'bad model' }), 'SY_ERR_BAD_REQUEST', /model: /);
  });
});

describe('entityKey', () => {
  const keys = [
    { name: 'user_id', type: 'int64' },
    { name: 'merchant_id', type: 'string' },
  ] as const;

  it('joins the values in join-key order, URI-encoded, ignoring other fields', () => {
    assert.equal(entityKey(keys, { merchant_id: 'shop', user_id: 7, amount: 3 }), 'user_id=7|merchant_id=shop');
    assert.equal(entityKey(keys, { user_id: 7, merchant_id: 'a|b=c d%é/' }), `user_id=7|merchant_id=${encodeURIComponent('a|b=c d%é/')}`);
    assert.equal(entityKey([{ name: 'k', type: 'string' }], { k: 'x' }), 'k=x');
  });

  it('int64: a safe integer or an integer string, canonicalised', () => {
    const k = [{ name: 'id', type: 'int64' }] as const;
    for (const [v, want] of [
      [42, '42'],
      ['42', '42'],
      ['007', '7'],
      ['+5', '5'],
      ['-0', '0'],
      [-3, '-3'],
      [' 12 ', '12'],
      ['9223372036854775807', '9223372036854775807'],
      ['-9223372036854775808', '-9223372036854775808'],
    ] as const) {
      assert.equal(entityKey(k, { id: v }), `id=${want}`, JSON.stringify(v));
    }
    assert.equal(entityKey(k, { id: '42' }), entityKey(k, { id: 42 }), 'string and number give the same key');
    for (const v of [1.5, 2 ** 53, Number.NaN, '9223372036854775808', '1e3', '0x10', '', 'abc', true, [1], {}]) {
      throwsCode(() => entityKey(k, { id: v }), 'SY_ERR_BAD_REQUEST', /join key "id" must be an int64/);
    }
  });

  it('string keys must be non-empty strings (numbers as their text); a missing key is a 400 naming it', () => {
    assert.equal(
      entityKey(keys, { user_id: 1, merchant_id: 5 }),
      entityKey(keys, { user_id: 1, merchant_id: '5' }),
      'a number is its decimal text (CSV cells)',
    );
    throwsCode(() => entityKey(keys, { user_id: 1, merchant_id: true }), 'SY_ERR_BAD_REQUEST', /join key "merchant_id" must be a non-empty string/);
    throwsCode(() => entityKey(keys, { user_id: 1, merchant_id: '' }), 'SY_ERR_BAD_REQUEST', /join key "merchant_id" must be a non-empty string/);
    throwsCode(() => entityKey(keys, { user_id: 1 }), 'SY_ERR_BAD_REQUEST', /join key "merchant_id" is missing \(expected user_id, merchant_id\)/);
    throwsCode(() => entityKey(keys, { merchant_id: 'm', user_id: null }), 'SY_ERR_BAD_REQUEST', /join key "user_id" is missing/);
    throwsCode(() => entityKey(keys, Object.create({ user_id: 1, merchant_id: 'm' }) as Json), 'SY_ERR_BAD_REQUEST', /join key "user_id" is missing/);
  });
});

describe('catalog', () => {
  const c = buildCatalog({
    entities: [parseEntity(user), parseEntity(merchant)],
    views: [parseView(userStats), parseView(txWindow)],
    services: [
      parseService(fraud),
      parseService({ name: 'fraud_v2', model: 'fraud_model', version: 2, features: [{ ref: 'user_stats:clicks' }] }),
      parseService({ name: 'other', model: 'other_model', version: 1, features: [{ ref: 'user_stats:clicks' }] }),
      parseService({ name: 'unbound', features: [{ ref: 'user_stats:clicks' }] }),
    ],
  });

  it('resolves refs to the view and the feature or aggregation with its type', () => {
    const r = c.resolve('user_stats:spend');
    assert.equal(r.view.name, 'user_stats');
    assert.equal(r.feature, 'spend');
    assert.equal(r.type, 'float64');
    assert.equal(c.resolve('tx_window:tx_count_5m').type, 'int64');
    assert.equal(c.resolve('tx_window:amount_sum_1h').type, 'float64');
    throwsCode(() => c.resolve('nope:x'), 'SY_ERR_BAD_REQUEST', /unknown feature "nope:x": no feature view "nope"/);
    throwsCode(() => c.resolve('user_stats:nope'), 'SY_ERR_BAD_REQUEST', /unknown feature "user_stats:nope": feature view "user_stats" has no feature "nope"/);
    throwsCode(() => c.resolve('tx_window:nope'), 'SY_ERR_BAD_REQUEST', /windowed view "tx_window" has no aggregation "nope"/);
    for (const bad of ['user_stats', ':x', 'x:', '']) throwsCode(() => c.resolve(bad), 'SY_ERR_BAD_REQUEST', /invalid feature reference/);
  });

  it("joinKeys: the view's entities' join keys in order", () => {
    assert.deepEqual(c.joinKeys('tx_window'), [
      { name: 'user_id', type: 'int64' },
      { name: 'merchant_id', type: 'string' },
    ]);
    assert.deepEqual(c.joinKeys('user_stats'), [{ name: 'user_id', type: 'int64' }]);
    throwsCode(() => c.joinKeys('nope'), 'SY_ERR_BAD_REQUEST', /unknown feature view "nope"/);
    assert.equal(c.entities.size, 2);
    assert.equal(c.views.size, 2);
    assert.equal(c.services.size, 4);
  });

  it('serviceFor: the version-specific binding first, else the model-wide one', () => {
    assert.equal(c.serviceFor('fraud_model', 2)?.name, 'fraud_v2');
    assert.equal(c.serviceFor('fraud_model', 1)?.name, 'fraud');
    assert.equal(c.serviceFor('fraud_model', 99)?.name, 'fraud');
    assert.equal(c.serviceFor('other_model', 1)?.name, 'other');
    assert.equal(c.serviceFor('other_model', 2), undefined);
    assert.equal(c.serviceFor('unknown', 1), undefined);
  });
});

// ---- the store, on SQLite and Postgres ----

interface Target {
  open(): Promise<Database>;
  cleanup(): Promise<void>;
}

async function sqliteTarget(): Promise<Target> {
  const root = await mkdtemp(join(tmpdir(), 'sy-featdefs-'));
  return { open: () => openDatabase(`sqlite:${join(root, 'meta.db')}`), cleanup: () => rm(root, { recursive: true, force: true }) };
}

async function postgresTarget(): Promise<Target> {
  const schema = pgSchema();
  return { open: () => openDatabase(schema.url), cleanup: () => schema.drop() };
}

function storeSuite(dialect: 'sqlite' | 'postgres', target: () => Promise<Target>): void {
  let t: Target;
  let db: Database;
  let store: DefinitionStore;
  let changes = 0;

  before(async () => {
    t = await target();
    db = await t.open();
    assert.equal(db.dialect, dialect);
    store = new DefinitionStore(db, { onChange: () => void changes++ });
  });
  after(async () => {
    await db.close();
    await t.cleanup();
  });

  it('put appends revisions; an unchanged spec appends nothing and reports no change', async () => {
    const a = await store.put('entity', user, 'alice');
    assert.deepEqual(
      { ...a, createdAt: 'x' },
      { kind: 'entity', name: 'user', revision: 1, spec: parseEntity(user), createdBy: 'alice', createdAt: 'x', change: 'created' },
    );
    assert.ok(Math.abs(Date.parse(a.createdAt) - Date.now()) < 60_000);
    assert.equal(changes, 1);
    // Same spec in another key order and with the defaults spelled out: unchanged.
    const b = await store.put('entity', { joinKeys: [{ type: 'int64', name: 'user_id' }], description: '', name: 'user' }, 'bob');
    assert.equal(b.change, 'unchanged');
    assert.equal(b.revision, 1);
    assert.equal(b.createdBy, 'alice');
    assert.equal(changes, 1, 'no change, no notification');
    const c = await store.put('entity', { ...user, description: 'A customer' }, 'bob');
    assert.equal(c.change, 'updated');
    assert.equal(c.revision, 2);
    assert.equal(changes, 2);
    assert.equal((await store.get('entity', 'user')).spec.description, 'A customer');
    await store.put('entity', merchant, 'alice');
    assert.deepEqual(
      (await store.list('entity')).map((r) => [r.name, r.revision]),
      [
        ['merchant', 1],
        ['user', 2],
      ],
    );
  });

  it('validates on put (400) and refers only to existing definitions', async () => {
    await rejectsCode(store.put('entity', { name: 'Bad', joinKeys: [] }, 'a'), 'SY_ERR_BAD_REQUEST', /invalid entity "Bad"/);
    await rejectsCode(
      store.put('view', { ...userStats, entities: ['ghost'] }, 'a'),
      'SY_ERR_BAD_REQUEST',
      /invalid feature view "user_stats": unknown entity "ghost"/,
    );
    await rejectsCode(
      store.put('view', { ...userStats, features: [{ name: 'user_id', type: 'int64' }] }, 'a'),
      'SY_ERR_BAD_REQUEST',
      /"user_id" is both a join key and a feature/,
    );
    await store.put('entity', { name: 'user_alias', joinKeys: [{ name: 'user_id', type: 'int64' }] }, 'a');
    await rejectsCode(
      store.put('view', { ...userStats, entities: ['user', 'user_alias'] }, 'a'),
      'SY_ERR_BAD_REQUEST',
      /join key "user_id" comes from two of its entities/,
    );
    await store.delete('entity', 'user_alias', 'a');
    await rejectsCode(store.put('wat' as 'entity', user, 'a'), 'SY_ERR_BAD_REQUEST', /unknown definition kind "wat"/);

    assert.equal((await store.put('view', userStats, 'a')).change, 'created');
    assert.equal((await store.put('view', txWindow, 'a')).change, 'created');
    await rejectsCode(
      store.put('service', { ...fraud, features: [{ ref: 'user_stats:nope' }] }, 'a'),
      'SY_ERR_BAD_REQUEST',
      /invalid feature service "fraud": unknown feature "user_stats:nope"/,
    );
    await rejectsCode(
      store.put('service', { ...fraud, features: [{ ref: 'user_stats:clicks', default: 1.5 }] }, 'a'),
      'SY_ERR_BAD_REQUEST',
      /the default of "user_stats:clicks" \(1\.5\) is not a int64/,
    );
    await rejectsCode(store.put('service', { ...fraud, features: [{ ref: 'user_stats:country', default: 0 }] }, 'a'), 'SY_ERR_BAD_REQUEST', /is not a string/);
    await rejectsCode(
      store.put(
        'service',
        {
          ...fraud,
          features: [
            { ref: 'user_stats:clicks', input: 'x' },
            { ref: 'user_stats:country', input: 'x' },
          ],
        },
        'a',
      ),
      'SY_ERR_BAD_REQUEST',
      /input "x" mixes a string feature/,
    );
    const s = await store.put('service', fraud, 'a');
    assert.equal(s.change, 'created');
    assert.deepEqual(s.spec, parseService(fraud));
  });

  it('one service per model binding (409 naming the bound one); version-specific and model-wide coexist', async () => {
    await rejectsCode(
      store.put('service', { ...fraud, name: 'fraud_copy' }, 'a'),
      'SY_ERR_REGISTRY_CONFLICT',
      /feature service "fraud" is already bound to model "fraud_model" \(every version\)/,
    );
    await store.put('service', { name: 'fraud_v3', model: 'fraud_model', version: 3, features: [{ ref: 'user_stats:spend' }] }, 'a');
    await rejectsCode(
      store.put('service', { name: 'fraud_v3b', model: 'fraud_model', version: 3, features: [{ ref: 'user_stats:spend' }] }, 'a'),
      'SY_ERR_REGISTRY_CONFLICT',
      /"fraud_v3" is already bound to model "fraud_model" version 3/,
    );
    const c = await store.catalog();
    assert.equal(c.serviceFor('fraud_model', 3)?.name, 'fraud_v3');
    assert.equal(c.serviceFor('fraud_model', 1)?.name, 'fraud');
    await store.delete('service', 'fraud_v3', 'a');
    assert.equal((await store.catalog()).serviceFor('fraud_model', 3)?.name, 'fraud');
  });

  it('a change that breaks a referrer is 409 naming it', async () => {
    await rejectsCode(
      store.put('view', { ...userStats, features: [{ name: 'spend', type: 'float64' }] }, 'a'),
      'SY_ERR_REGISTRY_CONFLICT',
      /feature view "user_stats" is used by feature service "fraud": unknown feature "user_stats:clicks"/,
    );
    await rejectsCode(
      store.put(
        'view',
        {
          ...userStats,
          features: [
            { name: 'clicks', type: 'string' },
            { name: 'spend', type: 'float64' },
          ],
        },
        'a',
      ),
      'SY_ERR_REGISTRY_CONFLICT',
      /used by feature service "fraud": the default of "user_stats:clicks" \(0\) is not a string/,
    );
    await rejectsCode(
      store.put('entity', { name: 'user', joinKeys: [{ name: 'uid', type: 'string' }] }, 'a'),
      'SY_ERR_REGISTRY_CONFLICT',
      /entity "user" is used by feature view "(user_stats|tx_window)": its join keys cannot change/,
    );
    // Compatible changes pass: a new feature, a new description.
    const u = await store.put('view', { ...userStats, features: [...userStats.features, { name: 'age', type: 'int64' }] }, 'a');
    assert.equal(u.change, 'updated');
    assert.equal(u.revision, 2);
    assert.equal((await store.put('entity', { ...user, description: 'Someone' }, 'a')).change, 'updated');
  });

  it('delete: 409 while referenced (naming the referrer), 404 when absent; history keeps every revision', async () => {
    await rejectsCode(store.delete('entity', 'merchant', 'a'), 'SY_ERR_REGISTRY_CONFLICT', /entity "merchant" is used by feature view "tx_window"/);
    await rejectsCode(store.delete('view', 'tx_window', 'a'), 'SY_ERR_REGISTRY_CONFLICT', /feature view "tx_window" is used by feature service "fraud"/);
    await rejectsCode(store.delete('view', 'ghost', 'a'), 'SY_ERR_REGISTRY_NOT_FOUND', /no feature view "ghost"/);
    const before = changes;
    await store.delete('service', 'fraud', 'carol');
    assert.equal(changes, before + 1);
    await rejectsCode(store.get('service', 'fraud'), 'SY_ERR_REGISTRY_NOT_FOUND', /no feature service "fraud"/);
    await rejectsCode(store.delete('service', 'fraud', 'carol'), 'SY_ERR_REGISTRY_NOT_FOUND', /no feature service "fraud"/);
    await store.delete('view', 'tx_window', 'carol');
    await store.delete('entity', 'merchant', 'carol');
    assert.deepEqual(
      (await store.list('entity')).map((r) => r.name),
      ['user'],
    );
    assert.deepEqual(
      (await store.list('view')).map((r) => r.name),
      ['user_stats'],
    );
    assert.deepEqual(await store.list('service'), []);

    const h = await store.history('service', 'fraud');
    assert.deepEqual(
      h.map((r) => [r.revision, r.deleted, r.createdBy]),
      [
        [1, false, 'a'],
        [2, true, 'carol'],
      ],
    );
    assert.deepEqual(h[1]!.spec, h[0]!.spec, 'a delete keeps the last spec');
    await rejectsCode(store.history('entity', 'ghost'), 'SY_ERR_REGISTRY_NOT_FOUND', /no entity "ghost"/);
    await rejectsCode(store.get('entity', 'ghost'), 'SY_ERR_REGISTRY_NOT_FOUND', /no entity "ghost"/);

    // Re-created: the revision numbers go on.
    const again = await store.put('service', { name: 'fraud', features: [{ ref: 'user_stats:clicks' }] }, 'dave');
    assert.equal(again.change, 'created');
    assert.equal(again.revision, 3);
    assert.deepEqual(
      (await store.history('service', 'fraud')).map((r) => [r.revision, r.deleted]),
      [
        [1, false],
        [2, true],
        [3, false],
      ],
    );
    // Re-creating the deleted entity with other join keys is fine: nothing refers to it.
    assert.equal((await store.put('entity', { ...merchant, joinKeys: [{ name: 'shop_id', type: 'int64' }] }, 'a')).revision, 3);
  });

  it('catalog(): every current definition, resolvable', async () => {
    const c = await store.catalog();
    assert.deepEqual([...c.entities.keys()].sort(), ['merchant', 'user']);
    assert.deepEqual([...c.views.keys()], ['user_stats']);
    assert.equal(c.resolve('user_stats:age').type, 'int64');
    assert.deepEqual(c.joinKeys('user_stats'), [{ name: 'user_id', type: 'int64' }]);
    assert.equal(c.serviceFor('fraud_model', 1), undefined, 'the re-created service is unbound');
    throwsCode(() => c.resolve('tx_window:tx_count_5m'), 'SY_ERR_BAD_REQUEST', /no feature view "tx_window"/);
  });

  it('concurrent writers never take the same revision', async () => {
    const other = dialect === 'postgres' ? await t.open() : db;
    try {
      const stores = [store, new DefinitionStore(other)];
      const n = 12;
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          stores[i % 2]!.put('entity', { name: 'racer', description: `d${i}`, joinKeys: [{ name: 'id', type: 'string' }] }, `w${i}`),
        ),
      );
      assert.deepEqual(
        results.map((r) => r.revision).sort((a, b) => a - b),
        Array.from({ length: n }, (_, i) => i + 1),
      );
      const h = await store.history('entity', 'racer');
      assert.deepEqual(
        h.map((r) => r.revision),
        Array.from({ length: n }, (_, i) => i + 1),
      );
      // The same spec from many writers at once: one revision.
      const same = await Promise.all(
        Array.from({ length: 6 }, (_, i) => stores[i % 2]!.put('entity', { name: 'twin', joinKeys: [{ name: 'id', type: 'string' }] }, 'w')),
      );
      assert.deepEqual(
        same.map((r) => r.revision),
        [1, 1, 1, 1, 1, 1],
      );
      assert.equal(same.filter((r) => r.change === 'created').length, 1);
    } finally {
      if (other !== db) await other.close();
    }
  });
}

describe('DefinitionStore on SQLite', () => {
  storeSuite('sqlite', sqliteTarget);

  it('works on sqlite::memory:', async () => {
    const db = await openDatabase('sqlite::memory:');
    try {
      const s = new DefinitionStore(db);
      await s.put('entity', user, 'a');
      assert.equal((await s.catalog()).entities.get('user')?.joinKeys[0]?.type, 'int64');
    } finally {
      await db.close();
    }
  });
});

const pgDown = await postgresReachable();
const inCi = process.env['CI'] === 'true';
if (pgDown !== null && inCi) {
  describe('DefinitionStore on Postgres', () => {
    it('needs Postgres on 127.0.0.1:5432 in CI', () => assert.fail(`Postgres is unreachable at ${PG_BASE}: ${pgDown}`));
  });
} else {
  const skip = pgDown === null ? false : `Postgres unreachable at ${PG_BASE} (${pgDown}); set CI=true to make this fail`;
  describe('DefinitionStore on Postgres', { skip }, () => {
    storeSuite('postgres', postgresTarget);
  });
}

// ---- admin routes ----

interface TestApp {
  app: FastifyInstance;
  db: Database;
  store: DefinitionStore;
  url: string;
  close(): Promise<void>;
}

/**
 * A bare Fastify app with the definition routes (platform = header x-platform: yes, or everything when `open`;
 * models named secret.* are invisible without x-platform) and, for the CLI, stand-ins for the data routes that
 * record what they get.
 */
async function startApp(opts: { open?: boolean; listen?: boolean; data?: Json[] } = {}): Promise<TestApp> {
  const db = await openDatabase('sqlite::memory:');
  const store = new DefinitionStore(db);
  const app = Fastify({ logger: false });
  installErrorShape(app);
  await registerOpenApi(app);
  const isPlatform = (req: { headers: Record<string, unknown> }): boolean => opts.open === true || req.headers['x-platform'] === 'yes';
  await app.register(featureDefinitionRoutes, {
    store,
    access: { platform: isPlatform, visible: (req, model) => isPlatform(req) || !model.startsWith('secret') },
  });
  if (opts.data) {
    const seen = opts.data;
    app.post('/api/v1/features/push', async (req) => {
      const b = req.body as { view: string; rows: Json[] };
      seen.push({ path: 'push', body: b });
      return { view: b.view, rows: b.rows.length, offlineNew: b.rows.length, onlineApplied: b.rows.length - 1 };
    });
    app.post('/api/v1/features/online', async (req) => {
      const b = req.body as { entities: Json[]; features?: string[] };
      seen.push({ path: 'online', body: b });
      return {
        results: b.entities.map((entity, i) => ({
          entity,
          features: Object.fromEntries(
            (b.features ?? ['svc:f']).map((f) => [
              f,
              i === 0 ? { value: 3.5, status: 'PRESENT', eventTime: '2025-01-02T03:04:05.000Z' } : { value: null, status: 'NOT_FOUND', eventTime: null },
            ]),
          ),
        })),
      };
    });
    app.post('/api/v1/features/export', async (req) => {
      const b = req.body as { entities: Json[]; features: string[] };
      seen.push({ path: 'export', body: b });
      return { rows: b.entities.map((e, i) => ({ ...e, ...Object.fromEntries(b.features.map((f) => [f, i === 0 ? 'a,"b"' : null])) })) };
    });
  }
  await app.ready();
  const url = opts.listen ? await app.listen({ port: 0, host: '127.0.0.1' }) : '';
  return {
    app,
    db,
    store,
    url,
    async close() {
      await app.close();
      await db.close();
    },
  };
}

describe('admin routes', () => {
  let t: TestApp;
  const platform = { 'x-platform': 'yes' };
  const send = async (
    method: 'GET' | 'PUT' | 'DELETE',
    url: string,
    payload?: unknown,
    headers: Record<string, string> = platform,
  ): Promise<{ status: number; body: Json & Json[] }> => {
    const r = await t.app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload: payload as Json }) });
    return { status: r.statusCode, body: r.body === '' ? ({} as Json & Json[]) : (JSON.parse(r.body) as Json & Json[]) };
  };
  const body = (d: Json): Json => {
    const { name: _, ...rest } = d;
    return rest;
  };

  before(async () => {
    t = await startApp();
  });
  after(async () => t.close());

  it('PUT creates (201) and updates (200), with the name from the path; change says which', async () => {
    let r = await send('PUT', '/api/v1/features/entities/user', body(user));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body['change'], 'created');
    assert.equal(r.body['revision'], 1);
    assert.deepEqual(r.body['spec'], parseEntity(user));
    r = await send('PUT', '/api/v1/features/entities/user', { ...user });
    assert.equal(r.status, 200);
    assert.equal(r.body['change'], 'unchanged');
    r = await send('PUT', '/api/v1/features/entities/user', { ...body(user), description: 'x' });
    assert.equal(r.status, 200);
    assert.equal(r.body['change'], 'updated');
    assert.equal(r.body['revision'], 2);
    r = await send('PUT', '/api/v1/features/entities/merchant', body(merchant), { 'x-platform': 'yes', 'x-switchyard-actor': 'erin' });
    assert.equal(r.body['createdBy'], 'erin');
    r = await send('PUT', '/api/v1/features/views/user_stats', body(userStats));
    assert.equal(r.status, 201);
    assert.deepEqual(r.body['spec'], parseView(userStats));
    r = await send('PUT', '/api/v1/features/views/tx_window', body(txWindow));
    assert.equal(r.status, 201);
    assert.deepEqual(r.body['spec'], parseView(txWindow));
    r = await send('PUT', '/api/v1/features/services/fraud', body(fraud));
    assert.equal(r.status, 201);
    assert.deepEqual(r.body['spec'], parseService(fraud));
  });

  it('PUT errors: name mismatch, bad fields (named), unknown references, conflicts', async () => {
    let r = await send('PUT', '/api/v1/features/entities/user', { ...user, name: 'other' });
    assert.equal(r.status, 400);
    assert.match(String(r.body['error']), /body\.name "other" does not match the entity name in the path \("user"\)/);
    r = await send('PUT', '/api/v1/features/entities/user', { joinKeys: [{ name: 'id', type: 'int64', extra: 1 }] });
    assert.equal(r.status, 400);
    assert.match(String(r.body['error']), /joinKeys\[0\]\.extra: unknown field/);
    r = await send('PUT', '/api/v1/features/entities/user', { joinKeys: [{ name: 'user_id', type: 'int64' }], wat: 1 });
    assert.equal(r.status, 400);
    assert.match(String(r.body['error']), /unknown field "wat"/);
    r = await send('PUT', '/api/v1/features/views/v', { entities: ['user'], features: [{ name: 'f', type: 'int64' }], ttlSeconds: '60' });
    assert.equal(r.status, 400, 'no type coercion');
    assert.match(String(r.body['error']), /ttlSeconds/);
    r = await send('PUT', '/api/v1/features/views/v', { entities: ['ghost'], features: [{ name: 'f', type: 'int64' }] });
    assert.equal(r.status, 400);
    assert.match(String(r.body['error']), /unknown entity "ghost"/);
    r = await send('PUT', '/api/v1/features/views/Bad', { entities: ['user'], features: [{ name: 'f', type: 'int64' }] });
    assert.equal(r.status, 400);
    assert.match(String(r.body['error']), /invalid feature view "Bad": name: /);
    r = await send('PUT', '/api/v1/features/services/s', []);
    assert.equal(r.status, 400);
    r = await send('PUT', '/api/v1/features/services/fraud2', body(fraud));
    assert.equal(r.status, 409);
    assert.match(String(r.body['error']), /"fraud" is already bound to model "fraud_model"/);
  });

  it('GET lists, reads and shows history; DELETE is 409 while referenced, 204, then 404', async () => {
    let r = await send('GET', '/api/v1/features/entities', undefined, {});
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.map((d) => d['name']),
      ['merchant', 'user'],
    );
    r = await send('GET', '/api/v1/features/views/tx_window', undefined, {});
    assert.equal(r.status, 200);
    assert.equal((r.body['spec'] as Json)['kind'], 'window');
    assert.equal('change' in r.body, false);
    r = await send('DELETE', '/api/v1/features/views/user_stats');
    assert.equal(r.status, 409);
    assert.match(String(r.body['error']), /used by feature service "fraud"/);
    assert.equal((await send('DELETE', '/api/v1/features/services/fraud')).status, 204);
    assert.equal((await send('DELETE', '/api/v1/features/services/fraud')).status, 404);
    r = await send('GET', '/api/v1/features/services/fraud', undefined, {});
    assert.equal(r.status, 404);
    assert.match(String(r.body['error']), /no feature service "fraud"/);
    r = await send('GET', '/api/v1/features/services/fraud/history', undefined, {});
    assert.equal(r.status, 200);
    assert.deepEqual(
      r.body.map((x) => [x['revision'], x['deleted']]),
      [
        [1, false],
        [2, true],
      ],
    );
    r = await send('GET', '/api/v1/features/entities/user/history', undefined, {});
    assert.deepEqual(
      r.body.map((x) => [x['revision'], x['deleted'], (x['spec'] as Json)['description']]),
      [
        [1, false, ''],
        [2, false, 'x'],
      ],
    );
    assert.equal((await send('GET', '/api/v1/features/views/ghost/history', undefined, {})).status, 404);
    assert.deepEqual((await send('GET', '/api/v1/features/services', undefined, {})).body, []);
  });

  it('writes need a platform key (403); reads do not', async () => {
    for (const [method, url, payload] of [
      ['PUT', '/api/v1/features/entities/x', body(user)],
      ['PUT', '/api/v1/features/views/x', { wat: 1 }],
      ['DELETE', '/api/v1/features/entities/user', undefined],
      ['DELETE', '/api/v1/features/views/ghost', undefined],
      ['PUT', '/api/v1/features/services/x', {}],
    ] as const) {
      const r = await send(method, url, payload, {});
      assert.equal(r.status, 403, `${method} ${url}`);
      assert.equal(r.body['error'], 'feature definitions are managed with a platform admin key');
    }
    assert.equal((await send('GET', '/api/v1/features/entities/user', undefined, {})).status, 200);
    await rejectsCode(t.store.get('entity', 'x'), 'SY_ERR_REGISTRY_NOT_FOUND', /no entity "x"/);
  });

  it('a service bound to a model the key cannot see reads as absent', async () => {
    assert.equal((await send('PUT', '/api/v1/features/services/hidden', { model: 'secret.m', features: [{ ref: 'user_stats:clicks' }] })).status, 201);
    assert.deepEqual((await send('GET', '/api/v1/features/services', undefined, {})).body, []);
    assert.equal((await send('GET', '/api/v1/features/services/hidden', undefined, {})).status, 404);
    assert.equal((await send('GET', '/api/v1/features/services/hidden/history', undefined, {})).status, 404);
    assert.deepEqual(
      (await send('GET', '/api/v1/features/services')).body.map((s) => s['name']),
      ['hidden'],
    );
  });

  it('documents every route in OpenAPI (tag features, distinct parameter names)', async () => {
    const doc = JSON.parse((await t.app.inject('/docs/json')).body) as {
      paths: Record<string, Record<string, { tags?: string[]; responses?: Json; requestBody?: Json }>>;
    };
    for (const [plural, param] of [
      ['entities', 'entity'],
      ['views', 'view'],
      ['services', 'service'],
    ]) {
      const expected: Array<[string, string[]]> = [
        [`/api/v1/features/${plural}`, ['get']],
        [`/api/v1/features/${plural}/{${param}}`, ['get', 'put', 'delete']],
        [`/api/v1/features/${plural}/{${param}}/history`, ['get']],
      ];
      for (const [path, methods] of expected) {
        for (const m of methods) {
          const op = doc.paths[path]?.[m];
          assert.ok(op, `OpenAPI lacks ${m.toUpperCase()} ${path}`);
          assert.deepEqual(op.tags, ['features']);
          assert.ok(op.responses && Object.keys(op.responses).some((c) => c.startsWith('2')) && op.responses['500'], `${m} ${path}: responses`);
          if (m === 'put') assert.ok(op.requestBody, `${path}: request body documented`);
        }
      }
    }
  });
});

// ---- CLI ----

describe('features CLI: pure parts', () => {
  it('kindArg and featuresArg', () => {
    assert.equal(kindArg('entity'), 'entities');
    assert.equal(kindArg('Views'), 'views');
    assert.equal(kindArg('service'), 'services');
    assert.throws(() => kindArg('model'), /must be entity, view or service/);
    assert.deepEqual(featuresArg('a:b, c:d,'), ['a:b', 'c:d']);
    assert.throws(() => featuresArg('ab'), /not a feature reference/);
    assert.throws(() => featuresArg(' , '), /at least one/);
  });

  it('entityArg: one entity per flag, composite keys comma-separated', () => {
    assert.deepEqual(entityArg('user_id=1,merchant_id=m=x', entityArg('user_id=2')), [{ user_id: '2' }, { user_id: '1', merchant_id: 'm=x' }]);
    assert.throws(() => entityArg('user_id'), /key=value/);
    assert.throws(() => entityArg('=1'), /key=value/);
    assert.throws(() => entityArg('a=1,a=2'), /"a" given twice/);
  });

  it('parseApplyFile: JSON or YAML, lists of named definitions', () => {
    const yaml = `
entities:
  - name: user
    joinKeys: [{ name: user_id, type: int64 }]
views:
  - name: user_stats
    entities: [user]
    features:
      - { name: clicks, type: int64 }
services: []
`;
    const plan = parseApplyFile(yaml, 'defs.yaml');
    assert.deepEqual(plan.entities, [{ name: 'user', joinKeys: [{ name: 'user_id', type: 'int64' }] }]);
    assert.equal(plan.views.length, 1);
    assert.deepEqual(plan.services, []);
    assert.deepEqual(parseApplyFile(JSON.stringify({ services: [fraud] }), 'defs.json').services, [fraud]);
    assert.throws(() => parseApplyFile('{"entities": [', 'defs.json'), /defs\.json: not valid JSON/);
    assert.throws(() => parseApplyFile('a: [', 'defs.yml'), /defs\.yml: not valid YAML/);
    assert.throws(() => parseApplyFile('[1]', 'defs.yaml'), /must be an object/);
    assert.throws(() => parseApplyFile('models: []', 'defs.yaml'), /unknown key "models"/);
    assert.throws(() => parseApplyFile('entities: {}', 'defs.yaml'), /"entities" must be a list/);
    assert.throws(() => parseApplyFile('entities: [{joinKeys: []}]', 'defs.yaml'), /entities\[0\]\.name is required/);
    assert.throws(() => parseApplyFile('entities: [{name: a}, {name: a}]', 'defs.yaml'), /entities has "a" twice/);
    assert.throws(() => parseApplyFile('entities: []', 'defs.yaml'), /no definitions/);
  });

  it('parseCsv: header, quoting, empty cells, errors naming the line', () => {
    const rows = parseCsv('\ufeffuser_id,name,note\r\n1,"Smith, J","say ""hi""\nthere"\n\n2,, \n3,"",x\n', 'rows.csv');
    assert.deepEqual(rows, [
      { user_id: '1', name: 'Smith, J', note: 'say "hi"\nthere' },
      { user_id: '2', name: null, note: null },
      { user_id: '3', name: '', note: 'x' },
    ]);
    assert.throws(() => parseCsv('a,b\n1\n', 'r.csv'), /r\.csv line 2: expected 2 fields, got 1/);
    assert.throws(() => parseCsv('a,a\n', 'r.csv'), /column "a" appears twice/);
    assert.throws(() => parseCsv('a,\n', 'r.csv'), /empty column name/);
    assert.throws(() => parseCsv('a\n"x\n', 'r.csv'), /line 2: unterminated quoted field/);
    assert.throws(() => parseCsv('a\nx"y"\n', 'r.csv'), /line 2: a quote inside an unquoted field/);
    assert.throws(() => parseCsv('', 'r.csv'), /empty/);
    assert.deepEqual(parseJsonl('{"a":1}\n\n{"a":2}\n', 'r.jsonl'), [{ a: 1 }, { a: 2 }]);
    assert.throws(() => parseJsonl('{"a":1}\n[1]\n', 'r.jsonl'), /r\.jsonl line 2: must be a JSON object/);
    assert.throws(() => parseJsonl('{"a":\n', 'r.jsonl'), /line 1: not valid JSON/);
  });

  it('typedRows: CSV cells typed by the view definition; join keys stay text', () => {
    const types = new Map([
      ['clicks', 'int64'],
      ['spend', 'float64'],
      ['vip', 'bool'],
      ['country', 'string'],
      ['user_id', 'int64'],
    ] as const);
    const rows = typedRows(
      [
        { user_id: '007', event_time: '2025-01-01T00:00:00Z', clicks: '3', spend: '1.5e2', vip: 'TRUE', country: '042', other: 'x' },
        { user_id: '8', event_time: '1735689600000', clicks: null, spend: '-0.5', vip: '0', country: '', other: null },
      ],
      types,
      'rows.csv',
      new Set(['user_id']),
    );
    assert.deepEqual(rows, [
      { user_id: '007', event_time: '2025-01-01T00:00:00Z', clicks: 3, spend: 150, vip: true, country: '042', other: 'x' },
      { user_id: '8', event_time: 1735689600000, spend: -0.5, vip: false, country: '' },
    ]);
    assert.throws(() => typedRows([{ clicks: '1.5' }], types, 'rows.csv'), /rows\.csv row 1, column "clicks": "1\.5" is not an integer/);
    assert.throws(() => typedRows([{ spend: 'abc' }], types, 'rows.csv'), /column "spend": "abc" is not a number/);
    assert.throws(() => typedRows([{ vip: 'maybe' }], types, 'rows.csv'), /column "vip": "maybe" is not a boolean/);
  });

  it('chunks of 1000 with per-chunk push ids; CSV output; online rows; history changes', () => {
    const rows = Array.from({ length: 2500 }, (_, i) => i);
    assert.deepEqual(
      chunk(rows, 1000).map((c) => [c[0], c.length]),
      [
        [0, 1000],
        [1000, 1000],
        [2000, 500],
      ],
    );
    assert.deepEqual(chunk([], 1000), []);
    assert.equal(chunkPushId('p', 0, 1), 'p');
    assert.deepEqual(
      [0, 1, 2].map((n) => chunkPushId('p', n, 3)),
      ['p-1', 'p-2', 'p-3'],
    );
    assert.equal(
      toCsv([
        { a: 1, b: 'x,y' },
        { a: null, c: ' q"' },
      ]),
      'a,b,c\n1,"x,y",\n,," q"""\n',
    );
    assert.deepEqual(
      onlineRows([
        {
          entity: { user_id: '1' },
          features: {
            'v:f': { value: 2, status: 'PRESENT', eventTime: '2025-01-02T03:04:05.000Z' },
            'v:g': { value: null, status: 'NOT_FOUND', eventTime: null },
          },
        },
      ]),
      [
        ['user_id=1', 'v:f', '2', 'PRESENT', '2025-01-02 03:04:05Z'],
        ['user_id=1', 'v:g', '-', 'NOT_FOUND', '-'],
      ],
    );
    assert.deepEqual(historyChanges([{ deleted: false }, { deleted: false }, { deleted: true }, { deleted: false }]), [
      'created',
      'updated',
      'deleted',
      'created',
    ]);
  });
});

const run = (args: string[]): Promise<Run> => runCli(args, { env: { SWITCHYARD_API_KEY: '', SWITCHYARD_URL: '' } });

describe('features CLI against a server', () => {
  let t: TestApp;
  let dir: string;
  const seen: Json[] = [];
  const u = (): string[] => ['--url', t.url];

  before(async () => {
    t = await startApp({ open: true, listen: true, data: seen });
    dir = await mkdtemp(join(tmpdir(), 'sy-features-cli-'));
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('--help lists the commands', async () => {
    const out = ok(await run(['features', '--help']));
    for (const c of ['entities', 'views', 'services', 'apply', 'delete', 'push', 'get', 'export']) assert.match(out, new RegExp(`\\n  ${c}\\b`), c);
    assert.match(ok(await run(['features', 'views', '--help'])), /show \[options\] <name>/);
    assert.match(ok(await run(['features', 'push', '--help'])), /--id <pushId>/);
    assert.match(ok(await run(['--help'])), /features/);
  });

  it('apply (YAML) prints created / updated / unchanged per definition; list, show, --history, delete', async () => {
    const file = join(dir, 'defs.yaml');
    const yaml = (desc: string): string => `
entities:
  - { name: user, joinKeys: [{ name: user_id, type: int64 }] }
  - { name: merchant, description: ${desc}, joinKeys: [{ name: merchant_id, type: string }] }
views:
  - { name: user_stats, entities: [user], ttlSeconds: 3600, features: [{ name: clicks, type: int64 }, { name: spend, type: float64 }, { name: vip, type: bool }] }
  - { name: tx_window, kind: window, entities: [user, merchant], aggregations: [{ name: n_5m, fn: count, window: 5m }, { name: amount_1h, fn: sum, field: amount, window: 1h }] }
services:
  - name: fraud
    model: fraud_model
    features: [{ ref: "user_stats:clicks", input: x, default: 0 }, { ref: "tx_window:n_5m", input: x }]
`;
    await writeFile(file, yaml('shops'));
    let out = ok(await run(['features', 'apply', file, ...u()]));
    assert.match(out, /^entity user: created \(revision 1\)$/m);
    assert.match(out, /^feature view tx_window: created \(revision 1\)$/m);
    assert.match(out, /^feature service fraud: created \(revision 1\)$/m);
    assert.match(out, /5 created, 0 updated, 0 unchanged\./);
    await writeFile(file, yaml('stores'));
    out = ok(await run(['features', 'apply', file, ...u()]));
    assert.match(out, /^entity user: unchanged \(revision 1\)$/m);
    assert.match(out, /^entity merchant: updated \(revision 2\)$/m);
    assert.match(out, /0 created, 1 updated, 4 unchanged\./);
    const json = JSON.parse(ok(await run(['features', 'apply', file, '--json', ...u()]))) as Json[];
    assert.equal(json.length, 5);
    assert.ok(json.every((d) => d['change'] === 'unchanged'));

    out = ok(await run(['features', 'views', ...u()]));
    assert.match(out, /tx_window/);
    assert.match(out, /user_stats/);
    assert.match(out, /3600 s/);
    out = ok(await run(['features', 'entities', 'list', '--json', ...u()]));
    assert.deepEqual(
      (JSON.parse(out) as Json[]).map((d) => d['name']),
      ['merchant', 'user'],
    );
    out = ok(await run(['features', 'services', 'show', 'fraud', ...u()]));
    assert.match(out, /fraud_model \(every version\)/);
    assert.match(out, /user_stats:clicks/);
    out = ok(await run(['features', 'views', 'show', 'tx_window', ...u()]));
    assert.match(out, /amount_1h/);
    assert.match(out, /window/);
    out = ok(await run(['features', 'entities', 'show', 'merchant', '--history', ...u()]));
    assert.match(out, /History of entity merchant/);
    assert.match(out, /│ 1 .*created/);
    assert.match(out, /│ 2 .*updated/);

    const bad = await run(['features', 'delete', 'view', 'user_stats', ...u()]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /409 feature view "user_stats" is used by feature service "fraud"/);
    assert.match(ok(await run(['features', 'delete', 'service', 'fraud', ...u()])), /Deleted feature service fraud/);
    out = ok(await run(['features', 'services', 'show', 'fraud', '--history', ...u()]));
    assert.match(out, /│ 2 .*deleted/);
    const missing = await run(['features', 'services', 'show', 'fraud', ...u()]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /404 no feature service "fraud"/);
  });

  it('apply stops at the first failure, naming the definition', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(
      file,
      JSON.stringify({
        entities: [{ name: 'shop', joinKeys: [{ name: 'shop_id', type: 'string' }] }],
        views: [{ name: 'bad', entities: ['ghost'], features: [{ name: 'f', type: 'int64' }] }],
      }),
    );
    const r = await run(['features', 'apply', file, ...u()]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /entity shop: created/);
    assert.match(r.stderr, /feature view bad: 400 invalid feature view "bad": unknown entity "ghost" \(1 applied before it\)/);
  });

  it('push: CSV typed by the definition, in requests of 1000 with per-request push ids; JSONL as is', async () => {
    seen.length = 0;
    const csv = [
      'user_id,event_time,clicks,spend,vip',
      ...Array.from({ length: 2500 }, (_, i) => `${i},2025-01-01T00:00:00Z,${i},${i / 2},${i % 2 === 0}`),
    ].join('\n');
    await writeFile(join(dir, 'rows.csv'), csv);
    const out = ok(await run(['features', 'push', 'user_stats', '--file', join(dir, 'rows.csv'), '--id', 'batch7', ...u()]));
    assert.match(out, /Pushed 2500 rows to user_stats in 3 requests: offlineNew=2500, onlineApplied=2497\./);
    const pushes = seen.filter((s) => s['path'] === 'push').map((s) => s['body'] as { view: string; rows: Json[]; pushId?: string });
    assert.deepEqual(
      pushes.map((p) => [p.view, p.rows.length, p.pushId]),
      [
        ['user_stats', 1000, 'batch7-1'],
        ['user_stats', 1000, 'batch7-2'],
        ['user_stats', 500, 'batch7-3'],
      ],
    );
    assert.deepEqual(pushes[0]!.rows[1], { user_id: '1', event_time: '2025-01-01T00:00:00Z', clicks: 1, spend: 0.5, vip: false });
    seen.length = 0;
    await writeFile(join(dir, 'rows.jsonl'), '{"user_id": 1, "event_time": "2025-01-01T00:00:00Z", "clicks": 2}\n');
    ok(await run(['features', 'push', 'user_stats', '-f', join(dir, 'rows.jsonl'), ...u()]));
    assert.deepEqual(seen[0]!['body'], { view: 'user_stats', rows: [{ user_id: 1, event_time: '2025-01-01T00:00:00Z', clicks: 2 }] });
    const bad = await run(['features', 'push', 'user_stats', '-f', join(dir, 'rows.txt'), ...u()]);
    assert.match(bad.stderr, /cannot tell the format/);
  });

  it('get prints a table per entity and feature; export writes CSV or JSONL', async () => {
    seen.length = 0;
    const out = ok(await run(['features', 'get', '--entity', 'user_id=1', '-e', 'user_id=2', '--features', 'user_stats:clicks,user_stats:spend', ...u()]));
    assert.deepEqual(seen[0]!['body'], { entities: [{ user_id: '1' }, { user_id: '2' }], features: ['user_stats:clicks', 'user_stats:spend'] });
    assert.match(out, /user_id=1 .*user_stats:clicks .*3\.5 .*PRESENT .*2025-01-02 03:04:05Z/);
    assert.match(out, /user_id=2 .*user_stats:spend .*NOT_FOUND/);
    const neither = await run(['features', 'get', '--entity', 'user_id=1', ...u()]);
    assert.equal(neither.code, 1);
    assert.match(neither.stderr, /either --features .* or --service/);

    seen.length = 0;
    await writeFile(join(dir, 'entities.csv'), 'user_id,timestamp\n1,2025-01-02T00:00:00Z\n2,1735776000000\n');
    const csvOut = join(dir, 'train.csv');
    assert.match(
      ok(await run(['features', 'export', '--entities', join(dir, 'entities.csv'), '--features', 'user_stats:clicks', '--output', csvOut, ...u()])),
      /Wrote 2 rows to .*train\.csv \(csv\)/,
    );
    assert.deepEqual(seen[0]!['body'], {
      entities: [
        { user_id: '1', timestamp: '2025-01-02T00:00:00Z' },
        { user_id: '2', timestamp: 1735776000000 },
      ],
      features: ['user_stats:clicks'],
    });
    assert.equal(await readFile(csvOut, 'utf8'), 'user_id,timestamp,user_stats:clicks\n1,2025-01-02T00:00:00Z,"a,""b"""\n2,1735776000000,\n');
    const jsonlOut = join(dir, 'train.jsonl');
    ok(await run(['features', 'export', '--entities', join(dir, 'entities.csv'), '--features', 'user_stats:clicks', '-o', jsonlOut, ...u()]));
    assert.deepEqual(
      (await readFile(jsonlOut, 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Json),
      [
        { user_id: '1', timestamp: '2025-01-02T00:00:00Z', 'user_stats:clicks': 'a,"b"' },
        { user_id: '2', timestamp: 1735776000000, 'user_stats:clicks': null },
      ],
    );
    const stdout = ok(
      await run(['features', 'export', '--entities', join(dir, 'entities.csv'), '--features', 'user_stats:clicks', '--format', 'jsonl', ...u()]),
    );
    assert.equal(stdout.trim().split('\n').length, 2);
  });
});
