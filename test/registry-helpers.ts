/**
 * Test helpers for the registry admin API and CLI: a real onnxruntime artifact inspector, a Registry on a
 * temporary SQLite file and artifact directory, and a Fastify app with the admin plugin and OpenAPI wired the
 * way src/server.ts wires its routes (root error handler and not-found handler with the `{"error"}` shape).
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { adminRoutes, registerOpenApi, type AdminOptions } from '../src/api/admin/routes.js';
import { installErrorShape } from '../src/api/reply-error.js';
import { Registry } from '../src/registry/index.js';
import type { SignatureJson } from '../src/registry/types.js';
import { onnxRuntime } from '../src/runtimes/onnx/index.js';
import { signatureJson } from '../src/runtimes/types.js';

/** The inspector the server uses: onnxruntime opens the file and the signature is read; throws when it does not load. */
export async function inspectOnnx(path: string): Promise<SignatureJson> {
  return signatureJson(await onnxRuntime.inspect(path));
}

export interface TestRegistry {
  registry: Registry;
  dir: string;
  close(): Promise<void>;
}

/** A real Registry on `sqlite:<tmp>/db.sqlite` with artifacts under `<tmp>/artifacts`. */
export async function openTestRegistry(): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-registry-'));
  const registry = await Registry.open({ databaseUrl: `sqlite:${join(dir, 'db.sqlite')}`, artifactDir: join(dir, 'artifacts'), inspect: inspectOnnx });
  return {
    registry,
    dir,
    async close() {
      await registry.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface AdminTestApp extends TestRegistry {
  app: FastifyInstance;
  /** Base URL when started with `listen: true`, else ''. */
  url: string;
}

/** A Fastify app with OpenAPI and the admin plugin over a fresh test registry. */
export async function startAdminApp(opts: { listen?: boolean } & Partial<Omit<AdminOptions, 'registry'>> = {}): Promise<AdminTestApp> {
  const reg = await openTestRegistry();
  const app = Fastify({ logger: false });
  installErrorShape(app);
  await registerOpenApi(app);
  const plugin: AdminOptions = { registry: reg.registry };
  if (opts.serving) plugin.serving = opts.serving;
  if (opts.maxArtifactBytes !== undefined) plugin.maxArtifactBytes = opts.maxArtifactBytes;
  await app.register(adminRoutes, plugin);
  await app.ready();
  const url = opts.listen ? await app.listen({ port: 0, host: '127.0.0.1' }) : '';
  return {
    ...reg,
    app,
    url,
    async close() {
      await app.close();
      await reg.close();
    },
  };
}

/** Postgres for tests; overridable for local setups (SY_TEST_POSTGRES_URL), CI uses the default. */
export const PG_BASE = process.env['SY_TEST_POSTGRES_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Redis for tests; overridable (SY_TEST_REDIS_URL), CI uses the default. */
export const REDIS_URL = process.env['SY_TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/** null when Redis answers PING, else why not. */
export async function redisReachable(): Promise<string | null> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2000, retryStrategy: () => null });
  try {
    await r.connect();
    await r.ping();
    return null;
  } catch (e) {
    return (e as Error).message;
  } finally {
    r.disconnect();
  }
}

/** null when Postgres answers, else why not. */
export async function postgresReachable(): Promise<string | null> {
  const c = new pg.Client({ connectionString: PG_BASE, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query('select 1');
    return null;
  } catch (e) {
    return (e as Error).message;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** A fresh schema name on the test Postgres and a function that drops it. */
export function pgSchema(): { url: string; drop(): Promise<void> } {
  const schema = `sy_test_${Math.random().toString(36).slice(2, 10)}`;
  return {
    url: `${PG_BASE}?schema=${schema}`,
    async drop() {
      const c = new pg.Client({ connectionString: PG_BASE });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * A suite that needs a service (Redis, Postgres): it runs when `down` is null (the service answered). Otherwise,
 * in CI (CI=true) a single failing test says why; elsewhere the suite is skipped with that message.
 */
export function describeNeeding(name: string, service: string, down: string | null, body: () => void): void {
  if (down === null) void describe(name, body);
  else if (process.env['CI'] === 'true') void describe(name, () => it(`needs ${service} in CI`, () => assert.fail(`${service} is unreachable: ${down}`)));
  else void describe(name, { skip: `${service} unreachable (${down}); set CI=true to make this fail` }, body);
}

/** A port on 127.0.0.1 that refuses connections: bound, then closed. */
export async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Polls `cond` every 5 ms. No deadline (a loaded machine may be slow): a hang is the test runner's timeout. */
export async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

/** Deletes every key under `prefix` (a test's own namespace). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
}
