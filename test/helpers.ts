/**
 * Test helpers: temporary model repositories built from the model zoo, an in-process Switchyard, and direct
 * onnxruntime reference runs to compare served outputs against.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { loadServerConfig, type ServerConfig } from '../src/config/server-config.js';
import type { Runtime } from '../src/runtimes/types.js';
import { createLogger, createSwitchyard, type Switchyard } from '../src/server.js';
import { writeModelRepository } from '../tools/onnx/zoo.js';

export type RepoSpec = Parameters<typeof writeModelRepository>[1];

export interface TestServer {
  sy: Switchyard;
  dir: string;
  /** Base URL once `listen()` was called. */
  url: string;
  close(): Promise<void>;
}

export interface StartOptions {
  /** Listen on a free loopback port (sets `url`). */
  listen?: boolean;
  /** Server settings on top of the test defaults (e.g. memoryBudget, database). */
  config?: Partial<ServerConfig>;
  /** Reuse this data dir (restart tests); default a fresh temp dir. */
  dataDir?: string;
  /** Runtime to load models with (default onnxruntime), e.g. one that injects faults. */
  runtime?: Runtime;
  /** The server's logger (default a silent one), e.g. one writing to a stream the test reads. */
  logger?: Logger;
}

/**
 * Write `models` to a temp repository and start Switchyard on it, with its registry in a fresh temp data dir
 * (embedded SQLite) unless `opts` says otherwise.
 */
export async function startSwitchyard(models: RepoSpec, opts: StartOptions = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-test-'));
  await writeModelRepository(join(dir, 'repo'), models);
  const config = loadServerConfig(
    {
      modelRepository: Object.keys(models).length ? join(dir, 'repo') : '',
      dataDir: opts.dataDir ?? join(dir, 'data'),
      port: 0,
      logLevel: 'silent',
      shutdownGraceMs: 2000,
      ...opts.config,
    },
    {},
  );
  const sy = await createSwitchyard(config, opts.logger ?? createLogger('silent'), opts.runtime ? { runtime: opts.runtime } : {});
  let url = '';
  if (opts.listen) url = await sy.app.listen({ port: 0, host: '127.0.0.1' });
  return {
    sy,
    dir,
    url,
    async close() {
      await sy.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Run a model directly with onnxruntime (the reference for served outputs). */
export async function referenceRun(bytes: Uint8Array, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(bytes);
  try {
    return (await s.run(feeds)) as Record<string, ort.Tensor>;
  } finally {
    await s.release();
  }
}

/** Deterministic pseudo-random floats in [-1, 1). */
export function floats(n: number, seed: number): number[] {
  let a = seed >>> 0;
  return Array.from({ length: n }, () => {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    return a / 2 ** 31 - 1;
  });
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  if (actual.length !== expected.length) throw new Error(`${what}: length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= tol)) throw new Error(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (|diff| ${d} > ${tol})`);
  }
}

/** Build a V2 binary-extension body: JSON header followed by raw tensor bytes. */
export function binaryBody(header: object, chunks: Uint8Array[]): { body: Buffer; headerLength: number } {
  const head = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([head, ...chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength))]), headerLength: head.length };
}

/** Split a binary-extension response into its JSON header and the remaining bytes. */
export function splitBinary(
  body: Buffer,
  headerLength: number,
): {
  json: { outputs: Array<{ name: string; datatype: string; shape: number[]; parameters?: { binary_data_size?: number }; data?: unknown[] }> } & Record<
    string,
    unknown
  >;
  rest: Buffer;
} {
  return { json: JSON.parse(body.subarray(0, headerLength).toString('utf8')), rest: body.subarray(headerLength) };
}

/** Seeded normal samples (Box-Muller over a small LCG), for drift tests. */
export function normals(n: number, seed: number, mean = 0, sd = 1): number[] {
  let s = seed >>> 0;
  const u = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const out: number[] = [];
  while (out.length < n) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const t = 2 * Math.PI * u();
    out.push(mean + sd * r * Math.cos(t), mean + sd * r * Math.sin(t));
  }
  return out.slice(0, n);
}

export interface WebhookReceiver {
  /** Where to send (on 127.0.0.1, a free port). */
  readonly url: string;
  /** Every request received, in order. */
  readonly received: { headers: IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}

/** A real local HTTP receiver for alert webhooks: answers 204 and keeps what it got. */
export async function startWebhookReceiver(path = '/hook'): Promise<WebhookReceiver> {
  const received: { headers: IncomingHttpHeaders; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      received.push({ headers: req.headers, body });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`,
    received,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
