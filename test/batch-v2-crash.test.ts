/**
 * V2 batch jobs survive a killed replica. Real `switchyard serve` processes; the test hook
 * SWITCHYARD_TEST_BATCH_STALL_AFTER=2 makes a replica commit two chunks, run the third and stall before committing
 * it (holding its lease), so SIGKILL lands at a known point, not after a sleep.
 *
 * - SQLite: kill -9 the only replica mid-job, restart it on the same data dir: the job completes, committed chunks
 *   are not redone, the stalled one is redone once; every row is in the output exactly once and equals
 *   onnxruntime run directly on the rows.
 * - Postgres: two replicas share the job's chunks; kill -9 the first; its chunk's lease runs out and the second
 *   redoes it; same exactly-once output.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { JobStore } from '../src/batch/index.js';
import { openDatabase } from '../src/storage/index.js';
import { mlp, writeModelRepository } from '../tools/onnx/zoo.js';
import { assertClose, floats, referenceRun } from './helpers.js';
import { describeNeeding, PG_BASE, pgSchema, postgresReachable } from './registry-helpers.js';
import { stallOf, startReplica, stopReplica, type Replica } from './replica-helpers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const ROWS = 10;
const CHUNK = 2;
const MLP = mlp();
const data = Array.from({ length: ROWS }, (_, i) => floats(64, 100 + i));
const jsonl = data.map((v, i) => JSON.stringify({ id: `r${i}`, v })).join('\n');
type Job = { id: string; status: string; counts: { total: number; succeeded: number; failed: number; done: number } };

async function startJob(r: Replica): Promise<string> {
  const form = new FormData();
  form.append('file', new Blob([jsonl]), 'rows.jsonl');
  const f = (await (await fetch(`${r.url}/api/v1/batch/files`, { method: 'POST', body: form })).json()) as { id: string };
  const res = await fetch(`${r.url}/api/v1/batch/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mlp', input: { fileId: f.id }, mapping: { features: 'v' }, keyField: 'id', chunkRows: CHUNK }),
  });
  assert.equal(res.status, 201);
  return ((await res.json()) as Job).id;
}

async function job(r: Replica, id: string): Promise<Job> {
  return (await (await fetch(`${r.url}/api/v1/batch/jobs/${id}`)).json()) as Job;
}

async function waitFor(r: Replica, id: string, done: (j: Job) => boolean): Promise<Job> {
  for (;;) {
    const j = await job(r, id);
    if (done(j)) return j;
    await sleep(50);
  }
}
const ended = (j: Job): boolean => ['completed', 'failed', 'cancelled'].includes(j.status);

/** Every row in the output exactly once, in order, equal to onnxruntime on the same rows. */
async function checkOutput(r: Replica, j: Job): Promise<void> {
  assert.equal(j.status, 'completed', JSON.stringify(j));
  assert.deepEqual(j.counts, { total: ROWS, succeeded: ROWS, failed: 0, done: ROWS });
  const out = (await (await fetch(`${r.url}/api/v1/batch/jobs/${j.id}/output`)).text())
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { row: number; key: string; score: number });
  assert.deepEqual(
    out.map((o) => o.key),
    data.map((_, i) => `r${i}`),
  );
  assert.deepEqual(
    out.map((o) => o.row),
    [...Array(ROWS).keys()],
  );
  const ref = await referenceRun(MLP, { features: new ort.Tensor('float32', Float32Array.from(data.flat()), [ROWS, 64]) });
  assertClose(
    out.map((o) => o.score),
    ref['score']!.data as Float32Array,
    1e-6,
    'scores',
  );
}

let dir = '';
let common: string[] = [];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sy-batch-v2-crash-'));
  await writeModelRepository(join(dir, 'repo'), { mlp: { versions: { 1: MLP } } });
  common = ['--model-repository', join(dir, 'repo')];
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('V2 batch job after kill -9 (SQLite, one replica restarted)', () => {
  it('resumes from the last committed chunk; every row exactly once, equal to direct inference', async () => {
    const dataDir = join(dir, 'sqlite-data');
    const args = [...common, '--data-dir', dataDir, '--batch-workers', '1'];
    const a = await startReplica(args, 4, { SWITCHYARD_TEST_BATCH_STALL_AFTER: '2' });
    let b: Replica | null = null;
    let id: string;
    try {
      const stalled = stallOf(a);
      id = await startJob(a);
      await stalled;
      assert.equal((await job(a, id)).counts.done, 2 * CHUNK);
      await stopReplica(a, 'SIGKILL');
      b = await startReplica(args, 4);
      await checkOutput(b, await waitFor(b, id, ended));
    } finally {
      await stopReplica(a, 'SIGKILL');
      if (b) await stopReplica(b, 'SIGTERM');
    }
    const db = await openDatabase(`sqlite:${join(dataDir, 'switchyard.db')}`);
    try {
      const c = await new JobStore(db.db, db.dialect).committers(id);
      assert.deepEqual(
        c.map((x) => x.attempts),
        [1, 1, 2, 1, 1],
        'committed chunks are never redone; the stalled one is redone once',
      );
    } finally {
      await db.close();
    }
  });
});

const pgDown = await postgresReachable().then((e) => e && `Postgres at ${PG_BASE}: ${e}`);
describeNeeding('V2 batch job shared by two replicas, one killed (Postgres)', 'Postgres', pgDown, () => {
  const schema = pgSchema();
  after(async () => {
    if (pgDown === null) await schema.drop();
  });
  it("the second replica takes the free chunks, then the dead one's after its lease runs out; every row exactly once", async () => {
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
      await waitFor(b, id, (x) => x.counts.done === ROWS - CHUNK);
      assert.equal((await job(b, id)).status, 'in_progress');
      await stopReplica(a, 'SIGKILL');
      await checkOutput(b, await waitFor(b, id, ended));
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
      assert.equal(new Set(c.map((x) => x.doneBy)).size, 2, 'both replicas committed chunks of the one job');
    } finally {
      await db.close();
    }
  });
});
