/**
 * Model lifecycle through the registry: lazy loading with a bounded wait, hot swap of aliases under load with
 * no failed request, and memory-budgeted residency across many models (real onnxruntime, embedded SQLite).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onnxRuntime } from '../src/runtimes/onnx/index.js';
import type { Runtime } from '../src/runtimes/types.js';
import { mlp, slow } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard, type TestServer } from './helpers.js';

/** Poll `done` on the event loop until it holds (no deadline: the test runner's timeout bounds a hang). */
async function until(done: () => boolean, everyMs = 5): Promise<void> {
  while (!done()) await new Promise((r) => setTimeout(r, everyMs));
}

/**
 * onnxruntime, counting the loaded models (sessions and their buffers) not yet disposed: whether an evicted
 * version gave its memory back is then an exact count, not a reading of the process RSS (which the allocator,
 * the garbage collector and whatever else shares the machine move).
 */
function countingRuntime(): { runtime: Runtime; live(): number } {
  let live = 0;
  const runtime: Runtime = {
    name: 'onnx-counting',
    inspect: (p) => onnxRuntime.inspect(p),
    async load(path, options) {
      const inner = await onnxRuntime.load(path, options);
      live++;
      let disposed = false;
      return {
        ...inner,
        async dispose() {
          if (!disposed) {
            disposed = true;
            live--;
          }
          await inner.dispose();
        },
      };
    },
  };
  return { runtime, live: () => live };
}

const body = (seed: number) => ({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, seed) }] });

async function infer(srv: TestServer, path: string, seed = 1): Promise<{ status: number; version: string; value: number; error: string }> {
  const r = await srv.sy.app.inject({ method: 'POST', url: `/v2/models/${path}/infer`, payload: body(seed) });
  const j = r.json();
  return { status: r.statusCode, version: j.model_version ?? '', value: j.outputs?.[0]?.data?.[0] ?? NaN, error: j.error ?? '' };
}

async function push(srv: TestServer, name: string, bytes: Uint8Array, opts: { lazy?: boolean; config?: Record<string, unknown> } = {}): Promise<number> {
  const reg = srv.sy.registry;
  await reg.getModel(name).catch(() => reg.createModel({ name, loadPolicy: opts.lazy ? 'lazy' : 'preload', config: opts.config ?? { instances: 1 } }, 'test'));
  const v = await reg.pushVersion(name, Buffer.from(bytes), {}, 'test');
  await srv.sy.manager.settled();
  return v.version;
}

describe('lazy loading', () => {
  it('a lazy model loads on its first request, which waits for it; metrics count the cold start', async () => {
    const srv = await startSwitchyard({});
    try {
      await push(srv, 'lazy', mlp(3), { lazy: true });
      const mv = srv.sy.manager.resolve('lazy');
      assert.equal(mv.state, 'UNLOADED', 'not loaded before a request');
      assert.equal((await srv.sy.app.inject('/v2/models/lazy/ready')).statusCode, 200, 'loadable on demand counts as ready');
      const r = await infer(srv, 'lazy');
      assert.equal(r.status, 200, r.error);
      assert.equal(mv.state, 'READY');
      const metrics = (await srv.sy.app.inject('/metrics')).body;
      assert.match(metrics, /switchyard_model_loads_total\{model="lazy",cause="request",result="ok"\} 1/);
      assert.match(metrics, /switchyard_model_cold_start_wait_seconds_count\{model="lazy"\} 1/);
    } finally {
      await srv.close();
    }
  });

  it('past the load-wait bound a request gets 503 + Retry-After, and the load still completes', async () => {
    const srv = await startSwitchyard({}, { config: { loadWaitMs: 1 } });
    try {
      await push(srv, 'heavy', slow(96), { lazy: true, config: { instances: 1, instance_mode: 'worker' } });
      const r = await srv.sy.app.inject({
        method: 'POST',
        url: '/v2/models/heavy/infer',
        payload: { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 512], data: floats(512, 1) }] },
      });
      assert.equal(r.statusCode, 503);
      assert.equal(r.headers['retry-after'], '1');
      assert.match(r.json().error, /model "heavy" version 1 is still loading after 1 ms/);
      const mv = srv.sy.manager.resolve('heavy');
      await mv.transition;
      assert.equal(mv.state, 'READY');
    } finally {
      await srv.close();
    }
  });
});

describe('hot swap', () => {
  it('flipping an alias repeatedly under load fails no request; traffic follows the alias once warm; the old version drains and unloads', async () => {
    const srv = await startSwitchyard({});
    try {
      await push(srv, 'fraud', mlp(11));
      await push(srv, 'fraud', mlp(12));
      const reg = srv.sy.registry;
      await reg.setAlias('fraud', 'production', 1, 'test');
      await srv.sy.manager.settled();
      assert.equal((await infer(srv, 'fraud')).version, '1', 'default route follows production');
      const expected = new Map([
        ['1', (await infer(srv, 'fraud/versions/1')).value],
        ['2', (await infer(srv, 'fraud/versions/2')).value],
      ]);

      let stop = false;
      const failures: string[] = [];
      const seen = new Set<string>();
      let count = 0;
      const client = async (path: string): Promise<void> => {
        while (!stop) {
          const r = await infer(srv, path);
          count++;
          if (r.status !== 200) failures.push(`${r.status} ${r.error}`);
          else if (Math.abs(r.value - expected.get(r.version)!) > 1e-5) failures.push(`version ${r.version} answered with another version's output`);
          else seen.add(r.version);
        }
      };
      const clients = [...Array.from({ length: 4 }, () => client('fraud')), ...Array.from({ length: 4 }, () => client('fraud/versions/production'))];
      for (let i = 0; i < 10; i++) {
        await reg.setAlias('fraud', 'production', i % 2 === 0 ? 2 : 1, 'test');
        await srv.sy.manager.settled();
        const now = (await infer(srv, 'fraud/versions/production')).version;
        assert.equal(now, i % 2 === 0 ? '2' : '1', 'once settled, new requests reach the new target');
        await new Promise((r) => setTimeout(r, 15));
      }
      stop = true;
      await Promise.all(clients);
      assert.deepEqual(failures, [], `${failures.length} of ${count} requests failed`);
      assert.deepEqual([...seen].sort(), ['1', '2']);
      // production ends on 1: version 2 is routed to by nothing and drains, then unloads.
      const v2 = srv.sy.manager.resolve('fraud', '2');
      await until(() => v2.state === 'UNLOADED');
      assert.match((await srv.sy.app.inject('/metrics')).body, /switchyard_model_unloads_total\{model="fraud",reason="retired"\} [1-9]/);
      // Explicitly requested, a retired version loads again.
      assert.equal((await infer(srv, 'fraud/versions/2')).status, 200);
    } finally {
      await srv.close();
    }
  });

  it('a newly pushed version becomes the default only once it is warm; archiving removes a version', async () => {
    const srv = await startSwitchyard({});
    try {
      await push(srv, 'm', mlp(1));
      assert.equal((await infer(srv, 'm')).version, '1');
      await push(srv, 'm', mlp(2));
      assert.equal((await infer(srv, 'm')).version, '2');
      await srv.sy.registry.archiveVersion('m', 1, 'test');
      await srv.sy.manager.settled();
      const r = await infer(srv, 'm/versions/1');
      assert.equal(r.status, 404);
      assert.match(r.error, /model "m" has no version "1"/);
      assert.equal((await infer(srv, 'm/versions/nope')).error, 'model "m" has no version or alias "nope"');
    } finally {
      await srv.close();
    }
  });
});

describe('memory-budgeted residency', () => {
  it('200 registered models, a budget that fits ~20: random traffic never fails, residency stays within the budget, LRU evicts', async () => {
    const MODELS = 200;
    const BUDGET = 20 * 512 * 1024; // measured resident size of this MLP is 0.3–0.9 MiB per loaded copy
    const counting = countingRuntime();
    const srv = await startSwitchyard({}, { config: { memoryBudget: BUDGET, loadWaitMs: 60_000 }, runtime: counting.runtime });
    try {
      const reg = srv.sy.registry;
      const bytes = Buffer.from(mlp(5));
      for (let i = 0; i < MODELS; i++) {
        await reg.createModel({ name: `m${i}`, loadPolicy: 'lazy', config: { instances: 1 } }, 'test');
        await reg.pushVersion(`m${i}`, bytes, {}, 'test');
      }
      await srv.sy.manager.settled();
      // A pinned model stays resident whatever the traffic.
      await reg.updateModel('m0', { pinned: true }, 'test');
      await srv.sy.manager.settled();
      assert.equal((await infer(srv, 'm0')).status, 200);

      let seed = 42;
      const rand = (n: number): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % n;
      const failures: string[] = [];
      let maxUsed = 0;
      let maxResident = 0;
      const client = async (n: number): Promise<void> => {
        for (let i = 0; i < n; i++) {
          const r = await infer(srv, `m${1 + rand(MODELS - 1)}`);
          if (r.status !== 200) failures.push(`${r.status} ${r.error}`);
          const mem = srv.sy.manager.memory();
          maxUsed = Math.max(maxUsed, mem.usedBytes);
          maxResident = Math.max(maxResident, srv.sy.manager.list().filter((m) => m.versions[0]!.state === 'READY').length);
        }
      };
      await Promise.all(Array.from({ length: 8 }, () => client(40)));
      assert.deepEqual(failures, []);
      assert.ok(maxUsed <= BUDGET, `accounted residency ${maxUsed} stayed within the budget ${BUDGET}`);
      assert.ok(maxResident >= 10 && maxResident <= 40, `about 20 resident at once (max seen ${maxResident})`);
      assert.equal(srv.sy.manager.resolve('m0').state, 'READY', 'the pinned model was never evicted');
      // Every eviction released its runtime memory: the loaded models still alive are exactly the resident versions.
      await srv.sy.manager.settled();
      const resident = srv.sy.manager
        .list()
        .flatMap((m) => m.versions)
        .filter((v) => v.state === 'READY').length;
      assert.equal(counting.live(), resident, `loaded models not disposed (${counting.live()}) = resident versions (${resident})`);
      const metrics = (await srv.sy.app.inject('/metrics')).body;
      const evictions = [...metrics.matchAll(/switchyard_model_unloads_total\{model="m\d+",reason="evicted"\} (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
      assert.ok(evictions >= 100, `most of 320 random requests over 199 models evict (${evictions})`);
      assert.match(metrics, /switchyard_memory_budget_bytes \d+/);
    } finally {
      await srv.close();
    }
  });

  it('a version with requests in flight is never evicted under them: the least recently used idle one goes instead', async () => {
    const srv = await startSwitchyard({}, { config: { memoryBudget: 2 ** 30 } });
    try {
      const slowBody = { inputs: [{ name: 'x', datatype: 'FP32', shape: [64, 512], data: floats(64 * 512, 3) }] };
      await push(srv, 'a', slow(96), { lazy: true, config: { instances: 1, instance_mode: 'worker' } });
      await push(srv, 'b', mlp(2), { lazy: true });
      await push(srv, 'c', mlp(2), { lazy: true }); // same artifact as b: same measured size
      const m = srv.sy.manager;
      assert.equal((await srv.sy.app.inject({ method: 'POST', url: '/v2/models/a/infer', payload: slowBody })).statusCode, 200);
      assert.equal((await infer(srv, 'b')).status, 200);
      const [a, b, c] = [m.resolve('a'), m.resolve('b'), m.resolve('c')];
      // a and b fit; c does not without an eviction.
      m.setMemoryBudget(a.residentBytes + 2 * b.residentBytes - 1);
      const busy = srv.sy.app.inject({ method: 'POST', url: '/v2/models/a/infer', payload: slowBody });
      await until(() => !!a.batcher && a.batcher.running > 0, 1); // a is busy
      assert.equal((await infer(srv, 'b')).status, 200, 'b used after a: a is the least recently used');
      // c needs room: a is least recently used but busy, so b is evicted.
      assert.equal((await infer(srv, 'c')).status, 200);
      assert.equal(a.state, 'READY', 'the busy version was not unloaded');
      assert.equal(b.state, 'UNLOADED');
      assert.equal(c.state, 'READY');
      assert.equal((await busy).statusCode, 200, 'the in-flight request completed');
      m.setMemoryBudget(1);
      const r = await infer(srv, 'b');
      assert.equal(r.status, 503);
      assert.match(r.error, /more than the whole memory budget \(1 bytes\)/);
    } finally {
      await srv.close();
    }
  });
});
