/**
 * Warmup as configuration (`model_warmup`: none, zeros, random, inline data, a data file beside the model,
 * count) and server readiness a load balancer can trust (a version registered later that fails does not flip
 * /v2/health/ready; --strict-readiness does). Real onnxruntime, embedded SQLite.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadServerConfig } from '../src/config/server-config.js';
import { onnxRuntime } from '../src/runtimes/onnx/index.js';
import type { Runtime } from '../src/runtimes/types.js';
import { failsWarmup, mlp } from '../tools/onnx/zoo.js';
import { parsesText, startWithFiles } from './ext-helpers.js';
import { startSwitchyard, type TestServer } from './helpers.js';

const textBody = (s: string) => ({ inputs: [{ name: 'text', datatype: 'BYTES', shape: [1, 1], data: [s] }] });
const sample = (text: unknown) => ({ inputs: { text } });

async function readiness(srv: TestServer, model: string): Promise<{ status: number; state: string; reason?: string }> {
  const r = await srv.sy.app.inject(`/v2/models/${model}/ready`);
  return { status: r.statusCode, ...r.json() };
}

/** Length-prefixed BYTES elements (the V2 binary layout of a BYTES tensor). */
function bytesFile(...items: string[]): Buffer {
  return Buffer.concat(
    items.flatMap((s) => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(Buffer.byteLength(s));
      return [len, Buffer.from(s)];
    }),
  );
}

describe('model_warmup', () => {
  it('a model that parses its string input is ready only with a configured sample (inline, file, binary file) or no warmup', async () => {
    const text = parsesText();
    const srv = await startWithFiles(
      {
        dflt: { versions: { 1: text } },
        inline: {
          versions: { 1: text },
          config: { model_warmup: [{ name: 'twelve', batch_size: 2, inputs: { text: { data_type: 'TYPE_STRING', dims: [1], data: ['12'] } } }] },
        },
        none: { versions: { 1: text }, config: { model_warmup: [] } },
        json_file: { versions: { 1: text }, config: { model_warmup: [sample({ input_data_file: 'text.json' })] } },
        raw_file: { versions: { 1: text }, config: { model_warmup: [sample({ input_data_file: 'text.bin' })] } },
        random: { versions: { 1: text }, config: { model_warmup: [sample({ random_data: true })] } },
      },
      { 'json_file/warmup/text.json': '["7"]', 'raw_file/warmup/text.bin': bytesFile('42') },
    );
    try {
      const d = await readiness(srv, 'dflt');
      assert.equal(d.status, 503);
      assert.equal(d.state, 'UNAVAILABLE');
      assert.match(d.reason!, /warmup failed/);
      for (const m of ['inline', 'none', 'json_file', 'raw_file', 'random']) {
        assert.equal((await readiness(srv, m)).status, 200, m);
        const r = await srv.sy.app.inject({ method: 'POST', url: `/v2/models/${m}/infer`, payload: textBody('12') });
        assert.equal(r.statusCode, 200, `${m}: ${r.body}`);
        assert.deepEqual(r.json().outputs[0].data, [12]);
      }
      // The configuration reports the samples (the repository import inlined the files).
      const cfg = (await srv.sy.app.inject('/v2/models/json_file/config')).json();
      assert.deepEqual(cfg.model_warmup, [{ inputs: { text: { data: ['7'] } } }]);
    } finally {
      await srv.close();
    }
  });

  it('runs each sample `count` times on every instance; zeros and the default run once', async () => {
    const runs = new Map<string, number>();
    const counting: Runtime = {
      name: onnxRuntime.name,
      inspect: (p) => onnxRuntime.inspect(p),
      async load(path, options) {
        const loaded = await onnxRuntime.load(path, options);
        const key = `${loaded.signature.inputs[0]!.name}:${options.instances}`;
        const instances = loaded.instances.map((i) => ({
          get inflight() {
            return i.inflight;
          },
          run: (inputs: Parameters<typeof i.run>[0]) => {
            runs.set(key, (runs.get(key) ?? 0) + 1);
            return i.run(inputs);
          },
          dispose: () => i.dispose(),
        }));
        return { ...loaded, instances };
      },
    };
    // Worker instances: no main-thread timing trial runs through the instances.
    const srv = await startSwitchyard(
      {
        thrice: {
          versions: { 1: mlp(1) },
          config: { instance_mode: 'worker', instances: 2, model_warmup: [{ count: 3, inputs: { features: { zero_data: true } } }] },
        },
        dflt: {
          versions: { 1: parsesText() },
          config: {
            instance_mode: 'worker',
            instances: 1,
            model_warmup: [{ inputs: { text: { data: ['1'] } } }, { count: 2, inputs: { text: { data: ['2'] } } }],
          },
        },
      },
      { runtime: counting },
    );
    try {
      assert.equal(runs.get('features:2'), 6, '3 runs on each of 2 instances');
      assert.equal(runs.get('text:1'), 3, 'two samples: 1 + 2 runs');
    } finally {
      await srv.close();
    }
  });

  it('invalid warmup configs leave the version UNAVAILABLE with a reason naming the key or input', async () => {
    const srv = await startSwitchyard({
      two_sources: { versions: { 1: mlp(1) }, config: { model_warmup: [{ inputs: { features: { zero_data: true, random_data: true } } }] } },
      unknown_input: { versions: { 1: mlp(1) }, config: { model_warmup: [{ inputs: { features: { zero_data: true }, nope: { zero_data: true } } }] } },
      missing_input: { versions: { 1: mlp(1) }, config: { model_warmup: [{ inputs: {} }] } },
      wrong_count: { versions: { 1: mlp(1) }, config: { model_warmup: [{ inputs: { features: { data: [1, 2, 3] } } }] } },
      wrong_type: { versions: { 1: mlp(1) }, config: { model_warmup: [{ inputs: { features: { data_type: 'TYPE_INT32', zero_data: true } } }] } },
    });
    try {
      const expect: Record<string, RegExp> = {
        two_sources: /model_warmup\.0\.inputs\.features: give exactly one of zero_data, random_data, data, binary_data, input_data_file/,
        unknown_input: /model_warmup\[0\]: the model has no input "nope"/,
        missing_input: /model_warmup\[0\]: input "features" is not given/,
        wrong_count: /model_warmup\[0\] input "features": .*64 elements but data has 3/,
        wrong_type: /data_type TYPE_INT32 but the model's input is TYPE_FP32/,
      };
      for (const [m, re] of Object.entries(expect)) {
        const r = await readiness(srv, m);
        assert.equal(r.status, 503, m);
        assert.match(r.reason!, re, m);
      }
    } finally {
      await srv.close();
    }
  });
});

describe('server readiness', () => {
  async function pushBroken(srv: TestServer, name: string): Promise<void> {
    const reg = srv.sy.registry;
    await reg.getModel(name).catch(() => reg.createModel({ name, loadPolicy: 'preload', config: { instances: 1 } }, 'test'));
    await reg.pushVersion(name, Buffer.from(failsWarmup()), {}, 'test');
    await srv.sy.manager.settled();
  }

  it('a version registered later that fails to load is unready on its own; the server stays ready', async () => {
    const srv = await startSwitchyard({ good: { versions: { 1: mlp(1) }, config: { version_policy: { all: {} } } } });
    try {
      assert.equal((await srv.sy.app.inject('/v2/health/ready')).statusCode, 200);
      await pushBroken(srv, 'later');
      await pushBroken(srv, 'good'); // version 2 of a served model fails: version 1 keeps serving
      const later = await readiness(srv, 'later');
      assert.equal(later.status, 503);
      assert.match(later.reason!, /warmup failed/);
      const v2 = await srv.sy.app.inject('/v2/models/good/versions/2/ready');
      assert.equal(v2.statusCode, 503);
      assert.equal((await readiness(srv, 'good')).status, 200);
      const h = await srv.sy.app.inject('/v2/health/ready');
      assert.equal(h.statusCode, 200, h.body);
      assert.equal(srv.sy.inference.ready(), true);
    } finally {
      await srv.close();
    }
  });

  it('a version loaded at start-up that fails makes the server unready', async () => {
    const srv = await startSwitchyard({ good: { versions: { 1: mlp(1) } }, bad: { versions: { 1: failsWarmup() } } });
    try {
      assert.equal((await srv.sy.app.inject('/v2/health/ready')).statusCode, 503);
    } finally {
      await srv.close();
    }
  });

  it('--strict-readiness: every servable version must be ready', async () => {
    const srv = await startSwitchyard({ good: { versions: { 1: mlp(1) } } }, { config: { strictReadiness: true } });
    try {
      assert.equal((await srv.sy.app.inject('/v2/health/ready')).statusCode, 200);
      await pushBroken(srv, 'later');
      assert.equal((await srv.sy.app.inject('/v2/health/ready')).statusCode, 503);
    } finally {
      await srv.close();
    }
  });

  it('SWITCHYARD_STRICT_READINESS sets it; the default is off', () => {
    assert.equal(loadServerConfig({}, {}).strictReadiness, false);
    assert.equal(loadServerConfig({}, { SWITCHYARD_STRICT_READINESS: '1' }).strictReadiness, true);
    assert.equal(loadServerConfig({ strictReadiness: false }, { SWITCHYARD_STRICT_READINESS: 'true' }).strictReadiness, false);
  });
});
