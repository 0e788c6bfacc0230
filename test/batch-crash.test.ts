/**
 * Batch jobs survive a killed replica. Real `switchyard serve` processes; the test hook
 * SWITCHYARD_TEST_BATCH_STALL_AFTER=2 makes a replica commit two chunks, run the third and stall before committing
 * it (holding its lease), so SIGKILL lands at a known point, not after a sleep.
 *
 * - SQLite: kill -9 the only replica mid-job, restart it on the same data dir: the job completes, the two
 *   committed chunks are not redone, the stalled one is redone once, every line is in the output exactly once
 *   and equals the online /v1/embeddings answer.
 * - Postgres: two replicas share one job's chunks (the second takes the rest while the first holds its stalled
 *   chunk); kill -9 the first; its chunk's lease runs out and the second redoes it; same exactly-once output.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI, { toFile } from 'openai';
import { JobStore } from '../src/batch/index.js';
import { openDatabase } from '../src/storage/index.js';
import { encoder, writeModelRepository } from '../tools/onnx/zoo.js';
import { assertClose } from './helpers.js';
import { describeNeeding, PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';
import { stallOf, startReplica, stopReplica, type Replica } from './replica-helpers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const LINES = 10;
const inputs = Array.from({ length: LINES }, (_, i) => `crash line ${i}`);
const jsonl = inputs
  .map((input, i) => JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/embeddings', body: { model: 'embed', input } }))
  .join('\n');

interface OutLine {
  custom_id: string;
  response: { status_code: number; body: { data: Array<{ embedding: number[] }> } };
}

/** Resolves when the replica logs that the test hook stalled it. */
const clientOf = (r: Replica): OpenAI => new OpenAI({ baseURL: `${r.url}/v1`, apiKey: 'open-mode', maxRetries: 0 });

async function startJob(r: Replica): Promise<string> {
  const client = clientOf(r);
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'crash.jsonl'), purpose: 'batch' });
  return (await client.batches.create({ input_file_id: file.id, endpoint: '/v1/embeddings', completion_window: '24h' })).id;
}

async function waitFor(r: Replica, id: string, done: (b: OpenAI.Batches.Batch) => boolean): Promise<OpenAI.Batches.Batch> {
  const client = clientOf(r);
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (done(b)) return b;
    await sleep(50);
  }
}

/** Every input line in the output exactly once, equal to the online answer of replica `r`. */
async function checkOutput(r: Replica, b: OpenAI.Batches.Batch): Promise<void> {
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: LINES, completed: LINES, failed: 0 });
  const client = clientOf(r);
  const out = (await (await client.files.content(b.output_file_id!)).text())
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as OutLine);
  assert.deepEqual(
    out.map((l) => l.custom_id),
    inputs.map((_, i) => `r${i}`),
  );
  for (const [i, l] of out.entries()) {
    assert.equal(l.response.status_code, 200);
    const online = await client.embeddings.create({ model: 'embed', input: inputs[i]! });
    assertClose(l.response.body.data[0]!.embedding, online.data[0]!.embedding, 1e-5, `line ${i}`);
  }
}

let dir = '';
let common: string[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sy-batch-crash-'));
  await writeModelRepository(join(dir, 'repo'), {
    encoder: { versions: { 1: encoder({ layers: 1, dModel: 32, heads: 2, seqLen: 32, ffn: 64, vocab: 300 }) } },
  });
  const cfg = join(dir, 'llm.json');
  await writeFile(cfg, JSON.stringify({ models: [{ name: 'embed', backend: 'onnx-embeddings', model: 'encoder' }] }));
  common = ['--model-repository', join(dir, 'repo'), '--llm-config', cfg, '--batch-chunk-lines', '2'];
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('batch job after kill -9 (SQLite, one replica restarted)', () => {
  it('resumes from the last committed chunk; every line exactly once, equal to online inference', async () => {
    const data = join(dir, 'sqlite-data');
    const args = [...common, '--data-dir', data, '--batch-workers', '1'];
    const a = await startReplica(args, 4, { SWITCHYARD_TEST_BATCH_STALL_AFTER: '2' });
    let b: Replica | null = null;
    let id: string;
    try {
      const stalled = stallOf(a);
      id = await startJob(a);
      await stalled;
      assert.equal((await clientOf(a).batches.retrieve(id)).request_counts!.completed, 4);
      await stopReplica(a, 'SIGKILL');
      b = await startReplica(args, 4);
      await checkOutput(b, await waitFor(b, id, (x) => ['completed', 'failed', 'expired', 'cancelled'].includes(x.status)));
    } finally {
      await stopReplica(a, 'SIGKILL');
      if (b) await stopReplica(b, 'SIGTERM');
    }
    const db = await openDatabase(`sqlite:${join(data, 'switchyard.db')}`);
    try {
      const c = await new JobStore(db.db, db.dialect).committers(id);
      assert.deepEqual(
        c.map((x) => x.attempts),
        [1, 1, 2, 1, 1],
        'committed chunks are never redone; the stalled one is redone once',
      );
      assert.equal(c[0]!.doneBy, c[1]!.doneBy);
      assert.ok(
        c.slice(2).every((x) => x.doneBy !== c[0]!.doneBy && x.doneBy === c[2]!.doneBy),
        JSON.stringify(c),
      );
    } finally {
      await db.close();
    }
  });
});

const pgDown = await postgresReachable().then((e) => e && `Postgres at ${PG_BASE}: ${e}`);

describeNeeding('batch job shared by two replicas, one killed (Postgres)', 'Postgres', pgDown, () => {
  const schema = pgSchema();
  after(async () => {
    if (pgDown === null) await schema.drop();
  });

  it("the second replica takes the free chunks, then the dead one's after its lease runs out; every line exactly once", async () => {
    const args = (i: number, workers: number): string[] => [
      ...common,
      '--data-dir',
      join(dir, `pg-data${i}`),
      '--database',
      schema.url,
      '--batch-workers',
      String(workers),
      '--batch-lease-ms',
      '1000',
    ];
    const a = await startReplica(args(0, 1), 4, { SWITCHYARD_TEST_BATCH_STALL_AFTER: '2' });
    let b: Replica | null = null;
    let id: string;
    try {
      const stalled = stallOf(a);
      id = await startJob(a);
      await stalled;
      b = await startReplica(args(1, 2), 4);
      // B runs every chunk but the one A holds (A keeps renewing its lease while it is alive).
      await waitFor(b, id, (x) => x.request_counts!.completed === LINES - 2);
      assert.equal((await clientOf(b).batches.retrieve(id)).status, 'in_progress');
      await stopReplica(a, 'SIGKILL');
      await checkOutput(b, await waitFor(b, id, (x) => ['completed', 'failed', 'expired', 'cancelled'].includes(x.status)));
    } finally {
      await stopReplica(a, 'SIGKILL');
      if (b) await stopReplica(b, 'SIGTERM');
    }
    const db = await openDatabase(schema.url);
    try {
      const c = await new JobStore(db.db, db.dialect).committers(id);
      assert.deepEqual(
        c.map((x) => x.attempts),
        [1, 1, 2, 1, 1],
      );
      const owners = new Set(c.map((x) => x.doneBy));
      assert.equal(owners.size, 2, 'both replicas committed chunks of the one job');
      assert.equal(c[0]!.doneBy, c[1]!.doneBy);
      assert.ok(
        c.slice(2).every((x) => x.doneBy !== c[0]!.doneBy),
        JSON.stringify(c),
      );
    } finally {
      await db.close();
    }
  });
});
