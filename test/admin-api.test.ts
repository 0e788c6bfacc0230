import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { tmpdir } from 'node:os';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { ERRORS, type ErrorCode } from '../src/errors.js';
import type { ModelRecord, RegistryEvent, VersionRecord } from '../src/registry/types.js';
import { encoder, mlp } from '../tools/onnx/zoo.js';
import { startAdminApp, type AdminTestApp } from './registry-helpers.js';

const V1 = Buffer.from(mlp(7));
const V2 = Buffer.from(mlp(8));
const V3 = Buffer.from(mlp(9));
const CORRUPT = Buffer.from('this is not an onnx model at all');

type Json = Record<string, unknown>;
const json = <T = Json>(r: LightMyRequestResponse): T => JSON.parse(r.body) as T;

function assertError(r: LightMyRequestResponse, status: number, pattern: RegExp, code?: ErrorCode): void {
  assert.equal(r.statusCode, status, `expected ${status}, got ${r.statusCode}: ${r.body}`);
  const body = json<{ error: unknown; code: unknown }>(r);
  assert.equal(typeof body.error, 'string');
  assert.deepEqual(Object.keys(body), ['error', 'code']);
  assert.match(body.error as string, pattern);
  // Every error carries a catalog code of the same status.
  assert.ok(typeof body.code === 'string' && body.code in ERRORS, `unknown code ${String(body.code)}`);
  assert.equal(ERRORS[body.code as ErrorCode].status, status, `${String(body.code)} is not a ${status}`);
  if (code !== undefined) assert.equal(body.code, code);
}

/** A multipart/form-data body (bytes + content-type) built by the platform's FormData serializer. */
async function multipart(parts: Array<[string, string | Buffer]>): Promise<{ payload: Buffer; headers: Record<string, string> }> {
  const form = new FormData();
  for (const [k, v] of parts) {
    if (typeof v === 'string') form.append(k, v);
    else form.append(k, new Blob([v], { type: 'application/octet-stream' }), 'model.onnx');
  }
  const req = new Request('http://localhost/', { method: 'POST', body: form });
  return { payload: Buffer.from(await req.arrayBuffer()), headers: { 'content-type': req.headers.get('content-type')! } };
}

describe('admin API /api/v1', () => {
  let t: AdminTestApp;
  const servingCalls: string[] = [];

  before(async () => {
    t = await startAdminApp({
      serving: (model) => {
        servingCalls.push(model);
        return [{ version: 1, state: 'READY', residentBytes: 1234 }];
      },
    });
  });
  after(async () => t.close());

  const inject = (opts: InjectOptions): Promise<LightMyRequestResponse> => t.app.inject(opts);
  const rawPush = (name: string, body: Buffer, query = '', headers: Record<string, string> = {}) =>
    inject({
      method: 'POST',
      url: `/api/v1/models/${name}/versions${query}`,
      payload: body,
      headers: { 'content-type': 'application/octet-stream', ...headers },
    });

  describe('models', () => {
    it('creates a model (201) and records the actor', async () => {
      const r = await inject({
        method: 'POST',
        url: '/api/v1/models',
        headers: { 'x-switchyard-actor': 'alice' },
        payload: {
          name: 'fraud',
          description: 'fraud scorer',
          owner: 'risk',
          tags: { team: 'risk' },
          loadPolicy: 'lazy',
          pinned: true,
          config: { max_batch_size: 8 },
        },
      });
      assert.equal(r.statusCode, 201, r.body);
      const m = json<ModelRecord>(r);
      assert.equal(m.name, 'fraud');
      assert.equal(m.description, 'fraud scorer');
      assert.equal(m.owner, 'risk');
      assert.deepEqual(m.tags, { team: 'risk' });
      assert.equal(m.loadPolicy, 'lazy');
      assert.equal(m.pinned, true);
      assert.deepEqual(m.config, { max_batch_size: 8 });
      assert.equal(m.latestVersion, 0);
      assert.deepEqual(m.aliases, {});
      const ev = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/models/fraud/events' })).events;
      assert.equal(ev[0]?.type, 'model_created');
      assert.equal(ev[0]?.actor, 'alice');
    });

    it('refuses a duplicate (409), a bad name (400) and bad bodies (400 naming the field)', async () => {
      assertError(await inject({ method: 'POST', url: '/api/v1/models', payload: { name: 'fraud' } }), 409, /fraud/, 'SY_ERR_REGISTRY_CONFLICT');
      assertError(await inject({ method: 'POST', url: '/api/v1/models', payload: { name: 'bad name!' } }), 400, /model name/);
      assertError(await inject({ method: 'POST', url: '/api/v1/models', payload: { description: 'x' } }), 400, /body\.name is required/, 'SY_ERR_BAD_REQUEST');
      assertError(await inject({ method: 'POST', url: '/api/v1/models', payload: { name: 'x', pinned: 'very' } }), 400, /body\.pinned must be boolean/);
      assertError(await inject({ method: 'POST', url: '/api/v1/models', payload: { name: 'x', colour: 'red' } }), 400, /unknown field "colour"/);
      assertError(
        await inject({ method: 'POST', url: '/api/v1/models', payload: { name: 'x', loadPolicy: 'eager' } }),
        400,
        /body\.loadPolicy must be equal to one of the allowed values/,
      );
      assertError(
        await inject({ method: 'POST', url: '/api/v1/models', payload: '{"name":', headers: { 'content-type': 'application/json' } }),
        400,
        /JSON/i,
        'SY_ERR_INVALID_JSON',
      );
      const list = json<{ models: ModelRecord[] }>(await inject({ url: '/api/v1/models' }));
      assert.deepEqual(
        list.models.map((m) => m.name),
        ['fraud'],
      );
    });

    it('lists, updates (PATCH) and shows a model', async () => {
      const p = await inject({ method: 'PATCH', url: '/api/v1/models/fraud', payload: { description: 'fraud scorer v2', pinned: false } });
      assert.equal(p.statusCode, 200, p.body);
      assert.equal(json<ModelRecord>(p).description, 'fraud scorer v2');
      assert.equal(json<ModelRecord>(p).pinned, false);
      assertError(await inject({ method: 'PATCH', url: '/api/v1/models/fraud', payload: { pinned: 3 } }), 400, /body\.pinned must be boolean/);
      assertError(await inject({ method: 'PATCH', url: '/api/v1/models/fraud', payload: {} }), 400, /body must NOT have fewer than 1 properties/);
      const l = await inject({ url: '/api/v1/models' });
      assert.equal(l.statusCode, 200);
      assert.equal(json<{ models: ModelRecord[] }>(l).models[0]?.description, 'fraud scorer v2');
    });

    it('unknown model → 404 everywhere', async () => {
      for (const [method, url, payload] of [
        ['GET', '/api/v1/models/nope'],
        ['PATCH', '/api/v1/models/nope', { owner: 'x' }],
        ['DELETE', '/api/v1/models/nope'],
        ['GET', '/api/v1/models/nope/versions'],
        ['GET', '/api/v1/models/nope/versions/1'],
        ['GET', '/api/v1/models/nope/aliases'],
        ['GET', '/api/v1/models/nope/aliases/prod'],
        ['PUT', '/api/v1/models/nope/aliases/prod', { version: 1 }],
        ['PUT', '/api/v1/models/nope/tags/k', { value: 'v' }],
        ['POST', '/api/v1/models/nope/versions/1/archive'],
      ] as const) {
        const r = await inject({ method, url, ...(payload ? { payload } : {}) });
        assertError(r, 404, /nope/);
      }
    });
  });

  describe('versions', () => {
    it('uploads raw bytes with query-string metadata and an alias (201)', async () => {
      const q =
        '?description=first&alias=production&tag=stage%3Dcanary&tag=owner%3Dbob&metric=auc%3D0.91&metric=loss%3D0.2' +
        '&param=lr%3D0.01&param=opt%3Dadam%3Dyes&source_run=run-42&dataset=ds-2025&code_ref=abc123';
      const r = await rawPush('fraud', V1, q, { 'x-switchyard-actor': 'bob' });
      assert.equal(r.statusCode, 201, r.body);
      const v = json<VersionRecord & { alias?: string }>(r);
      assert.equal(v.model, 'fraud');
      assert.equal(v.version, 1);
      assert.equal(v.description, 'first');
      assert.equal(v.alias, 'production');
      assert.deepEqual(v.tags, { stage: 'canary', owner: 'bob' });
      assert.deepEqual(v.metrics, { auc: 0.91, loss: 0.2 });
      assert.deepEqual(v.params, { lr: '0.01', opt: 'adam=yes' });
      assert.deepEqual(v.lineage, { sourceRun: 'run-42', dataset: 'ds-2025', codeRef: 'abc123' });
      assert.equal(v.createdBy, 'bob');
      assert.equal(v.status, 'ready');
      assert.equal(v.artifact.size, V1.length);
      assert.match(v.artifact.sha256, /^[0-9a-f]{64}$/);
      assert.deepEqual(v.signature, {
        inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 64] }],
        outputs: [{ name: 'score', datatype: 'FP32', shape: [-1, 1] }],
      });
      assert.equal(v.archivedAt, null);
      const aliases = json<{ aliases: Record<string, number> }>(await inject({ url: '/api/v1/models/fraud/aliases' }));
      assert.deepEqual(aliases.aliases, { production: 1 });
    });

    it('uploads multipart with metadata before the file (streamed) and after it (held)', async () => {
      const meta = {
        description: 'second',
        alias: 'staging',
        tags: { stage: 'test' },
        metrics: { auc: 0.93 },
        params: { lr: 0.02, deep: true },
        lineage: { sourceRun: 'run-43', codeRef: 'def456' },
      };
      const a = await multipart([
        ['metadata', JSON.stringify(meta)],
        ['file', V2],
      ]);
      const r = await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...a });
      assert.equal(r.statusCode, 201, r.body);
      const v = json<VersionRecord & { alias?: string }>(r);
      assert.equal(v.version, 2);
      assert.equal(v.description, 'second');
      assert.equal(v.alias, 'staging');
      assert.deepEqual(v.tags, { stage: 'test' });
      assert.deepEqual(v.metrics, { auc: 0.93 });
      assert.deepEqual(v.params, { lr: '0.02', deep: 'true' });
      assert.deepEqual(v.lineage, { sourceRun: 'run-43', codeRef: 'def456' });
      assert.equal(v.artifact.size, V2.length);

      const b = await multipart([
        ['file', V3],
        ['metadata', JSON.stringify({ description: 'third', version: 7 })],
      ]);
      const r2 = await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...b });
      assert.equal(r2.statusCode, 201, r2.body);
      assert.equal(json<VersionRecord>(r2).version, 7);
      assert.equal(json<VersionRecord>(r2).description, 'third');
      assert.equal(json<{ alias?: string }>(r2).alias, undefined);

      const c = await multipart([['file', V3]]);
      const r3 = await inject({ method: 'POST', url: '/api/v1/models/newmodel/versions', ...c });
      assert.equal(r3.statusCode, 201, r3.body);
      assert.equal(json<VersionRecord>(r3).version, 1);
    });

    it("accepts artifacts larger than Fastify's body limit (only maxArtifactBytes applies), raw and multipart", async () => {
      const big = Buffer.from(encoder({ layers: 1 }));
      assert.ok(big.length > 2 * 1024 * 1024, `encoder is ${big.length} bytes`);
      const r = await rawPush('bigmodel', big);
      assert.equal(r.statusCode, 201, r.body);
      assert.equal(json<VersionRecord>(r).artifact.size, big.length);
      assert.deepEqual(json<VersionRecord>(r).signature?.inputs, [{ name: 'input_ids', datatype: 'INT64', shape: [-1, 64] }]);
      const m = await multipart([
        ['metadata', '{"description":"big"}'],
        ['file', big],
      ]);
      const r2 = await inject({ method: 'POST', url: '/api/v1/models/bigmodel/versions', ...m });
      assert.equal(r2.statusCode, 201, r2.body);
      assert.equal(json<VersionRecord>(r2).version, 2);
      assert.equal(json<VersionRecord>(r2).artifact.size, big.length);
      assert.equal((await inject({ method: 'DELETE', url: '/api/v1/models/bigmodel' })).statusCode, 204);
    });

    it('refuses bad metadata with 400 naming the field, registering nothing', async () => {
      assertError(await rawPush('fraud', V1, '?metric=auc%3Dhigh'), 400, /"metric" auc must be a number/);
      assertError(await rawPush('fraud', V1, '?tag=novalue'), 400, /"tag" must be key=value/);
      assertError(await rawPush('fraud', V1, '?version=zero'), 400, /querystring\.version must be integer/);
      assertError(await rawPush('fraud', V1, '?colour=red'), 400, /unknown field "colour"/);
      assertError(await rawPush('fraud', V1, '?alias=1bad'), 400, /invalid alias/);
      assertError(await rawPush('fraud', V1, '?version=1'), 409, /already has version 1/);
      const m1 = await multipart([
        ['metadata', '{"metrics":{"auc":"x"}}'],
        ['file', V1],
      ]);
      assertError(await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...m1 }), 400, /metadata\.metrics\.auc must be a number/);
      const m2 = await multipart([
        ['metadata', '{not json'],
        ['file', V1],
      ]);
      assertError(await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...m2 }), 400, /metadata is not valid JSON/);
      const m3 = await multipart([['metadata', '{"description":"no file"}']]);
      assertError(await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...m3 }), 400, /no "file" part/);
      const m4 = await multipart([
        ['metadata', '{"colour":"red"}'],
        ['file', V1],
      ]);
      assertError(await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...m4 }), 400, /unknown field "colour"/);
      assertError(
        await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', payload: 'x', headers: { 'content-type': 'text/plain' } }),
        415,
        /./,
        'SY_ERR_UNSUPPORTED_MEDIA',
      );
      const vs = json<{ versions: VersionRecord[] }>(await inject({ url: '/api/v1/models/fraud/versions' }));
      assert.deepEqual(
        vs.versions.map((v) => v.version),
        [1, 2, 7],
      );
    });

    it('corrupt artifact → 400 with the registry message, nothing registered (raw and multipart)', async () => {
      const before = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/events?limit=10000' })).events.length;
      assertError(await rawPush('fraud', CORRUPT, '?alias=broken'), 400, /not a loadable model/);
      const m = await multipart([
        ['metadata', '{"alias":"broken"}'],
        ['file', CORRUPT],
      ]);
      assertError(await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...m }), 400, /not a loadable model/);
      assertError(await rawPush('ghost', CORRUPT), 400, /not a loadable model/, 'SY_ERR_ARTIFACT_INVALID');
      for (const r of [await rawPush('fraud', CORRUPT), await inject({ method: 'POST', url: '/api/v1/models/fraud/versions', ...m })]) {
        const message = json<{ error: string }>(r).error;
        assert.ok(!message.includes(tmpdir()) && !/\/[\w.-]+\/[\w.-]+/.test(message), `no server path in a client error: ${message}`);
      }
      const vs = json<{ versions: VersionRecord[] }>(await inject({ url: '/api/v1/models/fraud/versions?include_archived=true' }));
      assert.deepEqual(
        vs.versions.map((v) => v.version),
        [1, 2, 7],
      );
      assertError(await inject({ url: '/api/v1/models/ghost' }), 404, /ghost/, 'SY_ERR_REGISTRY_NOT_FOUND');
      const after = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/events?limit=10000' })).events.length;
      assert.equal(after, before);
      assert.deepEqual(json<{ aliases: object }>(await inject({ url: '/api/v1/models/fraud/aliases' })).aliases, { production: 1, staging: 2 });
    });

    it('gets a version by number or alias; unknown → 404', async () => {
      const a = await inject({ url: '/api/v1/models/fraud/versions/1' });
      assert.equal(a.statusCode, 200);
      assert.equal(json<VersionRecord>(a).description, 'first');
      const b = await inject({ url: '/api/v1/models/fraud/versions/staging' });
      assert.equal(json<VersionRecord>(b).version, 2);
      assertError(await inject({ url: '/api/v1/models/fraud/versions/99' }), 404, /99/);
      assertError(await inject({ url: '/api/v1/models/fraud/versions/nosuch' }), 404, /nosuch/);
    });

    it('shows the model with versions and live serving state', async () => {
      const r = await inject({ url: '/api/v1/models/fraud' });
      assert.equal(r.statusCode, 200, r.body);
      const m = json<ModelRecord & { versions: VersionRecord[]; serving: Json[] }>(r);
      assert.equal(m.name, 'fraud');
      assert.equal(m.latestVersion, 7);
      assert.deepEqual(m.aliases, { production: 1, staging: 2 });
      assert.deepEqual(
        m.versions.map((v) => v.version),
        [1, 2, 7],
      );
      assert.deepEqual(m.serving, [{ version: 1, state: 'READY', residentBytes: 1234 }]);
      assert.ok(servingCalls.includes('fraud'));
    });

    it('sets and removes version tags (by number or alias)', async () => {
      const r = await inject({ method: 'PUT', url: '/api/v1/models/fraud/versions/2/tags/reviewed', payload: { value: 'yes' } });
      assert.equal(r.statusCode, 200, r.body);
      assert.equal(json<VersionRecord>(r).tags['reviewed'], 'yes');
      const r2 = await inject({ method: 'PUT', url: '/api/v1/models/fraud/versions/production/tags/golden', payload: { value: '1' } });
      assert.equal(json<VersionRecord>(r2).version, 1);
      assert.equal(json<VersionRecord>(r2).tags['golden'], '1');
      assertError(await inject({ method: 'PUT', url: '/api/v1/models/fraud/versions/2/tags/k', payload: { value: 5 } }), 400, /body\.value must be string/);
      assertError(await inject({ method: 'PUT', url: '/api/v1/models/fraud/versions/2/tags/k', payload: {} }), 400, /body\.value is required/);
      const d = await inject({ method: 'DELETE', url: '/api/v1/models/fraud/versions/2/tags/reviewed' });
      assert.equal(d.statusCode, 204);
      assert.equal(d.body, '');
      assert.equal(json<VersionRecord>(await inject({ url: '/api/v1/models/fraud/versions/2' })).tags['reviewed'], undefined);
      assertError(await inject({ method: 'DELETE', url: '/api/v1/models/fraud/versions/2/tags/reviewed' }), 404, /reviewed/);
    });

    it('sets and removes model tags', async () => {
      const r = await inject({ method: 'PUT', url: '/api/v1/models/fraud/tags/tier', payload: { value: 'gold' } });
      assert.equal(r.statusCode, 200, r.body);
      assert.deepEqual(json<ModelRecord>(r).tags, { team: 'risk', tier: 'gold' });
      const d = await inject({ method: 'DELETE', url: '/api/v1/models/fraud/tags/tier' });
      assert.equal(d.statusCode, 204);
      assertError(await inject({ method: 'DELETE', url: '/api/v1/models/fraud/tags/tier' }), 404, /tier/);
    });
  });

  describe('aliases', () => {
    it('moves an alias and reports from/to; bad targets are refused', async () => {
      const r = await inject({
        method: 'PUT',
        url: '/api/v1/models/fraud/aliases/production',
        payload: { version: 2 },
        headers: { 'x-switchyard-actor': 'carol' },
      });
      assert.equal(r.statusCode, 200, r.body);
      assert.deepEqual(json(r), { alias: 'production', from: 1, to: 2 });
      const n = await inject({ method: 'PUT', url: '/api/v1/models/fraud/aliases/canary', payload: { version: 7 } });
      assert.deepEqual(json(n), { alias: 'canary', from: null, to: 7 });
      const bad = await inject({ method: 'PUT', url: '/api/v1/models/fraud/aliases/production', payload: { version: 99 } });
      assert.ok(bad.statusCode === 404 || bad.statusCode === 409, bad.body);
      assertError(bad, bad.statusCode, /99/);
      assertError(
        await inject({ method: 'PUT', url: '/api/v1/models/fraud/aliases/production', payload: { version: 'two' } }),
        400,
        /body\.version must be integer/,
      );
      assertError(await inject({ method: 'PUT', url: '/api/v1/models/fraud/aliases/production', payload: {} }), 400, /body\.version is required/);
      assertError(await inject({ method: 'PUT', url: '/api/v1/models/fraud/aliases/9lives', payload: { version: 1 } }), 400, /invalid alias/);
      const all = json<{ aliases: Record<string, number> }>(await inject({ url: '/api/v1/models/fraud/aliases' }));
      assert.deepEqual(all.aliases, { canary: 7, production: 2, staging: 2 });
    });

    it('answers where an alias pointed at a time (default now); bad `at` → 400', async () => {
      const events = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/models/fraud/events' })).events;
      const moves = events.filter((e) => e.type === 'alias_moved' && e.alias === 'production');
      assert.equal(moves.length, 2);
      assert.equal(moves[1]?.actor, 'carol');
      const first = moves[0]!;
      const now = await inject({ url: '/api/v1/models/fraud/aliases/production' });
      assert.equal(now.statusCode, 200);
      assert.equal(json(now)['version'], 2);
      assert.ok(!Number.isNaN(Date.parse(json(now)['at'] as string)));
      if (first.at !== moves[1]!.at) {
        const then = json(await inject({ url: `/api/v1/models/fraud/aliases/production?at=${encodeURIComponent(first.at)}` }));
        assert.deepEqual(then, { alias: 'production', version: 1, at: first.at });
      }
      const before = json(await inject({ url: '/api/v1/models/fraud/aliases/production?at=2000-01-01T00:00:00Z' }));
      assert.deepEqual(before, { alias: 'production', version: null, at: '2000-01-01T00:00:00.000Z' });
      const unset = json(await inject({ url: '/api/v1/models/fraud/aliases/never' }));
      assert.equal(unset['version'], null);
      assertError(await inject({ url: '/api/v1/models/fraud/aliases/production?at=yesterday' }), 400, /"at"/);
      assertError(await inject({ url: '/api/v1/models/fraud/aliases/production?at=2025-13-45T99:00:00Z' }), 400, /"at"/);
    });

    it('archive refuses an aliased version (409), removes the alias (204), then archives', async () => {
      assertError(await inject({ method: 'POST', url: '/api/v1/models/fraud/versions/7/archive' }), 409, /canary/);
      const d = await inject({ method: 'DELETE', url: '/api/v1/models/fraud/aliases/canary' });
      assert.equal(d.statusCode, 204);
      assertError(await inject({ method: 'DELETE', url: '/api/v1/models/fraud/aliases/canary' }), 404, /canary/);
      const a = await inject({ method: 'POST', url: '/api/v1/models/fraud/versions/7/archive', headers: { 'x-switchyard-actor': 'dave' } });
      assert.equal(a.statusCode, 200, a.body);
      assert.ok(json<VersionRecord>(a).archivedAt !== null);
      const vs = json<{ versions: VersionRecord[] }>(await inject({ url: '/api/v1/models/fraud/versions' }));
      assert.deepEqual(
        vs.versions.map((v) => v.version),
        [1, 2],
      );
      const all = json<{ versions: VersionRecord[] }>(await inject({ url: '/api/v1/models/fraud/versions?include_archived=true' }));
      assert.deepEqual(
        all.versions.map((v) => v.version),
        [1, 2, 7],
      );
      assertError(await inject({ url: '/api/v1/models/fraud/versions?include_archived=maybe' }), 400, /include_archived must be boolean/);
    });
  });

  describe('events', () => {
    it('lists model and global events with filters; bad filters → 400', async () => {
      const m = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/models/fraud/events' })).events;
      const types = new Set(m.map((e) => e.type));
      for (const t of ['model_created', 'model_updated', 'version_created', 'alias_moved', 'alias_removed', 'tag_set', 'tag_removed', 'version_archived']) {
        assert.ok(types.has(t as RegistryEvent['type']), `no ${t} event`);
      }
      assert.ok(m.every((e) => e.model === 'fraud'));
      const archived = m.find((e) => e.type === 'version_archived')!;
      assert.equal(archived.actor, 'dave');
      assert.equal(archived.version, 7);
      const limited = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/models/fraud/events?limit=2' })).events;
      assert.equal(limited.length, 2);
      const all = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/events' })).events;
      assert.ok(all.some((e) => e.model === 'newmodel'));
      const only = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/events?model=newmodel' })).events;
      assert.ok(only.length > 0 && only.every((e) => e.model === 'newmodel'));
      const future = json<{ events: RegistryEvent[] }>(await inject({ url: '/api/v1/events?since=2999-01-01T00:00:00Z' })).events;
      assert.deepEqual(future, []);
      const until = json<{ events: RegistryEvent[] }>(await inject({ url: `/api/v1/events?until=${encodeURIComponent(m[0]!.at)}` })).events;
      assert.ok(until.length >= 1 && until.every((e) => e.at <= m[0]!.at));
      assertError(await inject({ url: '/api/v1/events?since=soon' }), 400, /"since"/);
      assertError(await inject({ url: '/api/v1/events?limit=0' }), 400, /querystring\.limit must be >= 1/);
      assertError(await inject({ url: '/api/v1/models/fraud/events?limit=many' }), 400, /querystring\.limit must be integer/);
    });
  });

  describe('delete', () => {
    it('deletes a model (204), then it is gone (404)', async () => {
      const d = await inject({ method: 'DELETE', url: '/api/v1/models/newmodel' });
      assert.equal(d.statusCode, 204, d.body);
      assertError(await inject({ url: '/api/v1/models/newmodel' }), 404, /newmodel/);
      const names = json<{ models: ModelRecord[] }>(await inject({ url: '/api/v1/models' })).models.map((x) => x.name);
      assert.ok(!names.includes('newmodel'));
    });
  });

  describe('OpenAPI', () => {
    it('serves an OpenAPI 3 document listing every admin route, and the UI', async () => {
      const r = await inject({ url: '/docs/json' });
      assert.equal(r.statusCode, 200);
      const doc = json<{ openapi: string; info: Json; paths: Record<string, Record<string, Json>> }>(r);
      assert.match(doc.openapi, /^3\.\d+\.\d+$/);
      const expected: Array<[string, string[]]> = [
        ['/api/v1/models', ['get', 'post']],
        ['/api/v1/models/{name}', ['get', 'patch', 'delete']],
        ['/api/v1/models/{name}/versions', ['get', 'post']],
        ['/api/v1/models/{name}/versions/{version}', ['get']],
        ['/api/v1/models/{name}/versions/{version}/archive', ['post']],
        ['/api/v1/models/{name}/versions/{version}/tags/{key}', ['put', 'delete']],
        ['/api/v1/models/{name}/aliases', ['get']],
        ['/api/v1/models/{name}/aliases/{alias}', ['get', 'put', 'delete']],
        ['/api/v1/models/{name}/tags/{key}', ['put', 'delete']],
        ['/api/v1/models/{name}/events', ['get']],
        ['/api/v1/events', ['get']],
      ];
      for (const [path, methods] of expected) {
        assert.ok(doc.paths[path], `OpenAPI lacks ${path}`);
        for (const m of methods) {
          const op = doc.paths[path]![m] as { responses?: Record<string, unknown> } | undefined;
          assert.ok(op, `OpenAPI lacks ${m.toUpperCase()} ${path}`);
          assert.ok(op.responses && Object.keys(op.responses).some((c) => c.startsWith('2')), `${m} ${path}: no 2xx response`);
          assert.ok(op.responses['500'], `${m} ${path}: no error response`);
          const schema = (op.responses['500'] as { content?: Record<string, { schema?: { required?: string[]; properties?: Record<string, unknown> } }> })
            .content?.['application/json']?.schema;
          assert.deepEqual(schema?.required, ['error', 'code'], `${m} ${path}: the error schema requires error and code`);
          assert.ok(schema?.properties?.['code'], `${m} ${path}: the error schema lacks code`);
        }
      }
      assert.ok(!Object.keys(doc.paths).some((p) => p.startsWith('/docs')), 'docs routes must be hidden');
      const upload = doc.paths['/api/v1/models/{name}/versions']!['post'] as {
        requestBody: { content: Record<string, unknown> };
        parameters: Array<{ name: string; in: string }>;
      };
      assert.ok(upload.requestBody.content['application/octet-stream']);
      assert.ok(upload.requestBody.content['multipart/form-data']);
      for (const q of ['description', 'alias', 'tag', 'metric', 'param', 'source_run', 'dataset', 'code_ref', 'version']) {
        assert.ok(
          upload.parameters.some((p) => p.in === 'query' && p.name === q),
          `upload lacks query parameter ${q}`,
        );
      }
      const create = doc.paths['/api/v1/models']!['post'] as { requestBody: { content: { 'application/json': { schema: { required: string[] } } } } };
      assert.deepEqual(create.requestBody.content['application/json'].schema.required, ['name']);
      const ui = await inject({ url: '/docs' });
      assert.ok(ui.statusCode === 200 || ui.statusCode === 302, `GET /docs → ${ui.statusCode}`);
    });
  });
});

describe('admin API upload limit', () => {
  let t: AdminTestApp;
  before(async () => {
    t = await startAdminApp({ maxArtifactBytes: 4096 });
  });
  after(async () => t.close());

  it('answers 413 for a raw or multipart artifact over the limit, registering nothing', async () => {
    const raw = await t.app.inject({
      method: 'POST',
      url: '/api/v1/models/big/versions',
      payload: V1,
      headers: { 'content-type': 'application/octet-stream' },
    });
    assertError(raw, 413, /larger than the upload limit of 4096 bytes/);
    const m = await multipart([
      ['metadata', '{}'],
      ['file', V1],
    ]);
    assertError(await t.app.inject({ method: 'POST', url: '/api/v1/models/big/versions', ...m }), 413, /larger than the upload limit/);
    const m2 = await multipart([
      ['file', V1],
      ['metadata', '{}'],
    ]);
    assertError(await t.app.inject({ method: 'POST', url: '/api/v1/models/big/versions', ...m2 }), 413, /larger than the upload limit/);
    assertError(await t.app.inject({ url: '/api/v1/models/big' }), 404, /big/);
  });

  it('enforces the limit while streaming when there is no Content-Length (chunked)', async () => {
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    const addr = t.app.server.address() as { port: number };
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < V1.length; i += 1024) c.enqueue(V1.subarray(i, i + 1024));
        c.close();
      },
    });
    const r = await fetch(`http://127.0.0.1:${addr.port}/api/v1/models/big/versions`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/octet-stream' },
      duplex: 'half',
    } as RequestInit);
    assert.equal(r.status, 413);
    const tooLarge = (await r.json()) as { error: string; code: string };
    assert.match(tooLarge.error, /larger than the upload limit/);
    assert.equal(tooLarge.code, 'SY_ERR_BODY_TOO_LARGE');
    const g = await fetch(`http://127.0.0.1:${addr.port}/api/v1/models/big`);
    assert.equal(g.status, 404);
  });
});
