/**
 * Helpers for the Triton-extension and warmup tests: a repository with extra files beside the models
 * (labels, warmup data), and small models built for them.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadServerConfig, type ServerConfig } from '../src/config/server-config.js';
import type { Runtime } from '../src/runtimes/types.js';
import { createLogger, createSwitchyard } from '../src/server.js';
import { attr, GraphBuilder } from '../tools/onnx/graph.js';
import { OnnxType } from '../tools/onnx/proto.js';
import { writeModelRepository } from '../tools/onnx/zoo.js';
import type { RepoSpec, TestServer } from './helpers.js';

/** `x` [N,C] FP32 → `y` = x (Identity): classification results follow from the inputs. */
export function identity(classes = 4): Uint8Array {
  const g = new GraphBuilder('identity');
  const x = g.input({ name: 'x', type: OnnxType.FLOAT, shape: ['batch', classes] });
  g.op('Identity', [x], undefined, 'y');
  g.output({ name: 'y', type: OnnxType.FLOAT, shape: ['batch', classes] });
  return g.encode();
}

/** `text` [N,1] STRING → `n` [N,1] INT32 (Cast string → int32): an empty string fails to parse. */
export function parsesText(): Uint8Array {
  const g = new GraphBuilder('parses_text');
  const x = g.input({ name: 'text', type: OnnxType.STRING, shape: ['batch', 1] });
  g.op('Cast', [x], { to: attr.int(OnnxType.INT32) }, 'n');
  g.output({ name: 'n', type: OnnxType.INT32, shape: ['batch', 1] });
  return g.encode();
}

/**
 * Start Switchyard on a repository of `models` plus `files` (paths relative to the repository root, e.g.
 * `m/labels.txt`), in a fresh temp data dir.
 */
export async function startWithFiles(
  models: RepoSpec,
  files: Record<string, string | Uint8Array>,
  config: Partial<ServerConfig> = {},
  runtime?: Runtime,
): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-ext-'));
  const repo = join(dir, 'repo');
  await writeModelRepository(repo, models);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(repo, path)), { recursive: true });
    await writeFile(join(repo, path), content);
  }
  const cfg = loadServerConfig({ modelRepository: repo, dataDir: join(dir, 'data'), port: 0, logLevel: 'silent', shutdownGraceMs: 2000, ...config }, {});
  const sy = await createSwitchyard(cfg, createLogger('silent'), runtime ? { runtime } : {});
  return {
    sy,
    dir,
    url: '',
    async close() {
      await sy.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
