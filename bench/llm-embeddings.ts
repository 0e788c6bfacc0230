/**
 * @module
 * `npm run bench:llm-embeddings` (also part of `npm run bench:llm`): embeddings throughput through Switchyard's
 * `/v1/embeddings` (texts, the real WordPiece tokenizer, the serving core's dynamic batcher, pooling and
 * normalisation, JSON) against the same ONNX model alone in this process (onnxruntime-node on ids tokenized
 * beforehand, full batches back to back): what the whole path costs on top of the model. The encoder is the
 * test suite's (tools/onnx/zoo.ts `encoder`), the tokenizer.json a BERT-style WordPiece written here.
 *
 * Switchyard: BENCH_CLIENTS concurrent clients, each request BENCH_INPUTS texts; one instance with the same
 * intra-op threads as the direct session, max batch = clients × inputs. Direct: `session.run` on batches of
 * that size. Rounds alternate (BENCH_SECONDS each); texts/s, medians, ratio Switchyard / model alone.
 * Env: BENCH_SECONDS (3), BENCH_ROUNDS (3), BENCH_CLIENTS (4), BENCH_INPUTS (8), BENCH_THREADS (1), BENCH_SAVE.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { Client } from 'undici';
import { OnnxEmbeddingModelSchema } from '../src/config/llm-config.js';
import { tokenize } from '../src/inference/embeddings.js';
import { loadTokenizer } from '../src/inference/tokenizer.js';
import { encoder, writeModelRepository } from '../tools/onnx/zoo.js';
import { prng } from '../tools/prng.js';
import { bertWordPiece } from '../tools/tokenizers/wordpiece.js';
import { benchPort, loadAverage, machineName, quantile, Report, startServer, stopServer } from './lib.js';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 3);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const CLIENTS = Number(process.env['BENCH_CLIENTS'] ?? 4);
const INPUTS = Number(process.env['BENCH_INPUTS'] ?? 8);
const THREADS = Number(process.env['BENCH_THREADS'] ?? 1);
const SEQ = 32;
const BATCH = CLIENTS * INPUTS;
const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const WORDS = [
  'the',
  'switch',
  'yard',
  'model',
  'serves',
  'many',
  'tenants',
  'fair',
  'queue',
  'token',
  'batch',
  'stream',
  'vector',
  'text',
  'fast',
  'slow',
  'train',
  'track',
  'signal',
  'route',
  'canary',
  'shadow',
  'replica',
  'cache',
  'embed',
  'encode',
  'pool',
  'mean',
  'norm',
  'run',
];
const vocab: Record<string, number> = { '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, '.': 4, ',': 5, '##s': 6, '##ing': 7 };
for (const w of WORDS) vocab[w] = Object.keys(vocab).length;
const TOKENIZER = bertWordPiece(vocab);

/** Texts of 8–14 words (some with a suffix the tokenizer splits off, some unknown): at most 30 tokens with [CLS] and [SEP]. */
const rand = prng(5);
const texts = Array.from({ length: 256 }, () => {
  const n = 8 + Math.floor(rand() * 7);
  return Array.from({ length: n }, () => {
    const w = WORDS[Math.floor(rand() * WORDS.length)]!;
    const r = rand();
    return r < 0.2 ? `${w}s` : r < 0.25 ? 'zebra' : w;
  }).join(' ');
});

const MODEL = encoder({ layers: 2, dModel: 128, heads: 4, seqLen: SEQ, ffn: 256, vocab: 64 });
const report = new Report();
const say = report.say;
const dir = await mkdtemp(join(tmpdir(), 'switchyard-bench-embeddings-'));
await writeModelRepository(join(dir, 'repo'), {
  encoder: { versions: { 1: MODEL }, config: { instances: 1, intra_op_threads: THREADS, max_batch_size: BATCH, max_queue_delay_us: 1000 } },
});
await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(TOKENIZER));
await writeFile(
  join(dir, 'llm.json'),
  JSON.stringify({ models: [{ name: 'embed', backend: 'onnx-embeddings', model: 'encoder', tokenizer: { path: 'tokenizer.json' } }] }),
);
const tokenizer = loadTokenizer(
  OnnxEmbeddingModelSchema.parse({ name: 'embed', backend: 'onnx-embeddings', model: 'encoder', tokenizer: { path: join(dir, 'tokenizer.json') } }),
);
const batches = Array.from({ length: texts.length / BATCH }, (_, b) => {
  const rows = tokenize(texts.slice(b * BATCH, (b + 1) * BATCH), SEQ, tokenizer, false);
  const ids = new BigInt64Array(BATCH * SEQ);
  rows.forEach((r, i) =>
    r.ids.forEach((id, j) => {
      ids[i * SEQ + j] = BigInt(id);
    }),
  );
  return new ort.Tensor('int64', ids, [BATCH, SEQ]);
});
const port = await benchPort();
const sy = await startServer(
  'switchyard',
  [
    cli,
    'serve',
    '--port',
    String(port),
    '--grpc-port',
    '0',
    '--log-level',
    'warn',
    '--data-dir',
    join(dir, 'data'),
    '--model-repository',
    join(dir, 'repo'),
    '--llm-config',
    join(dir, 'llm.json'),
  ],
  port,
);
const clients = Array.from({ length: CLIENTS }, () => new Client(sy.url, { pipelining: 1 }));
const session = await ort.InferenceSession.create(MODEL, { intraOpNumThreads: THREADS, interOpNumThreads: 1 });

/** Switchyard: CLIENTS loops of requests of INPUTS texts for SECONDS; texts per second. */
async function viaSwitchyard(): Promise<number> {
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  let done = 0;
  await Promise.all(
    clients.map(async (c, k) => {
      for (let i = k * 7; performance.now() < end; i += INPUTS) {
        const input = Array.from({ length: INPUTS }, (_, j) => texts[(i + j) % texts.length]!);
        const res = await c.request({
          path: '/v1/embeddings',
          method: 'POST',
          body: JSON.stringify({ model: 'embed', input, encoding_format: 'float' }),
          headers: { 'content-type': 'application/json' },
        });
        const body = (await res.body.json()) as { data?: unknown[] };
        if (res.statusCode !== 200 || body.data?.length !== INPUTS) throw new Error(`status ${res.statusCode}: ${JSON.stringify(body).slice(0, 200)}`);
        done += INPUTS;
      }
    }),
  );
  return done / ((performance.now() - t0) / 1000);
}

/** The model alone: batches of BATCH rows of ids (tokenized by Switchyard's tokenizer beforehand) back to back. */
async function direct(): Promise<number> {
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  let done = 0;
  for (let b = 0; performance.now() < end; b++) {
    await session.run({ input_ids: batches[b % batches.length]! });
    done += BATCH;
  }
  return done / ((performance.now() - t0) / 1000);
}

try {
  say(`Switchyard embeddings benchmark — ${new Date().toISOString().slice(0, 10)} — ${machineName()}`);
  say(`NOTE: a 2 vCPU VM shared with other work (noisy); load average at start: ${loadAverage()}.`);
  say(`Encoder (tools/onnx/zoo.ts): 2 layers, d 128, ${SEQ} tokens; WordPiece tokenizer.json; ${THREADS} intra-op thread(s) on both sides.`);
  say(
    `Switchyard: ${CLIENTS} clients × ${INPUTS} texts per /v1/embeddings request (batches up to ${BATCH}); model alone: onnxruntime-node, batches of ${BATCH} pre-tokenized rows.`,
  );
  say(`${ROUNDS} rounds of ${SECONDS}s each, alternating; medians.`);
  await direct();
  await viaSwitchyard();
  const d: number[] = [];
  const s: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      d.push(await direct());
      s.push(await viaSwitchyard());
    } else {
      s.push(await viaSwitchyard());
      d.push(await direct());
    }
  }
  const dm = quantile(d, 0.5);
  const sm = quantile(s, 0.5);
  say(`  model alone ${dm.toFixed(0)} texts/s | via Switchyard ${sm.toFixed(0)} texts/s | Switchyard / model alone ${(sm / dm).toFixed(3)}`);
  if (process.env['BENCH_SAVE']) await report.save(process.env['BENCH_SAVE']);
} finally {
  await Promise.all(clients.map((c) => c.close()));
  await stopServer(sy);
  await session.release();
  await rm(dir, { recursive: true, force: true });
}
