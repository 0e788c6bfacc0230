/**
 * V2 batch jobs (/api/v1/batch) on a real server, against SQLite and Postgres: CSV and JSONL uploads and a
 * Parquet file read from a server path; column → input mapping (a list of scalar columns, an array column),
 * keyField and includedFields passed through; JSONL and Parquet output equal to onnxruntime run directly on the
 * same rows; bad rows in the error file with their reason; the failure budget failing a job; bad specs refused
 * with SY_ERR_BATCH_SPEC; the SSE progress stream; retry-failed; the completion webhook (retried after a 500).
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { parquetReadObjects } from 'hyparquet';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { encoder, mlp } from '../tools/onnx/zoo.js';
import { assertClose, floats, referenceRun, startSwitchyard, type TestServer } from './helpers.js';
import { describeNeeding, pgSchema, postgresReachable, PG_BASE } from './registry-helpers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MLP = mlp();
const ENC_OPTS = { layers: 1, dModel: 32, heads: 2, seqLen: 8, ffn: 64, vocab: 50 };
const ENC = encoder(ENC_OPTS);
type Job = {
  id: string;
  status: string;
  counts: { total: number; succeeded: number; failed: number };
  outputFileId: string | null;
  errorFileId: string | null;
  errors: Array<{ code: string }> | null;
  progress: { rowsPerSecond: number | null };
};
const ENDED = ['completed', 'failed', 'cancelled'];

async function mlpReference(rows: number[][]): Promise<number[]> {
  const out = await referenceRun(MLP, { features: new ort.Tensor('float32', Float32Array.from(rows.flat()), [rows.length, 64]) });
  return Array.from(out['score']!.data as Float32Array);
}

async function encReference(rows: number[][]): Promise<number[][]> {
  const out = await referenceRun(ENC, { input_ids: new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, 8]) });
  const d = out['embedding']!.data as Float32Array;
  return rows.map((_, i) => Array.from(d.subarray(i * 32, (i + 1) * 32)));
}

function suite(name: string, database: () => string): void {
  describe(name, () => {
    let server: TestServer;
    let url = '';
    before(async () => {
      server = await startSwitchyard(
        { mlp: { versions: { 1: MLP } }, encoder: { versions: { 1: ENC } } },
        {
          listen: true,
          config: { batchWorkers: 2, database: database() },
        },
      );
      url = server.url;
    });
    after(async () => server?.close());

    const api = async (method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        body: body === undefined ? null : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, json: text === '' ? null : JSON.parse(text) };
    };
    const upload = async (name: string, bytes: Uint8Array | string): Promise<string> => {
      const form = new FormData();
      form.append('file', new Blob([typeof bytes === 'string' ? bytes : Buffer.from(bytes)]), name);
      const res = await fetch(`${url}/api/v1/batch/files`, { method: 'POST', body: form });
      assert.equal(res.status, 200);
      return ((await res.json()) as { id: string }).id;
    };
    const until = async (id: string): Promise<Job> => {
      for (;;) {
        const j = (await api('GET', `/api/v1/batch/jobs/${id}`)).json as Job;
        if (ENDED.includes(j.status)) return j;
        await sleep(30);
      }
    };
    const lines = async (id: string, which: 'output' | 'errors'): Promise<any[]> => {
      const res = await fetch(`${url}/api/v1/batch/jobs/${id}/${which}`);
      assert.equal(res.status, 200);
      return (await res.text())
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
    };

    it('CSV upload, 64 scalar columns → features; key and pass-through; a bad row in the error file; output equals onnxruntime', async () => {
      const N = 23;
      const rows = Array.from({ length: N }, (_, i) => floats(64, i + 1).map((x) => Math.round(x * 1e4) / 1e4));
      const cols = Array.from({ length: 64 }, (_, i) => `f${i}`);
      const csv = [
        ['id', 'group', ...cols].join(','),
        ...rows.map((r, i) => [`id-${i}`, `"g,${i % 3}"`, ...r.map((x, k) => (i === 5 && k === 7 ? '' : String(x)))].join(',')),
      ].join('\n');
      const fileId = await upload('rows.csv', csv);
      const created = await api('POST', '/api/v1/batch/jobs', {
        model: 'mlp',
        input: { fileId },
        mapping: { features: cols },
        keyField: 'id',
        includedFields: ['group'],
        chunkRows: 4,
      });
      assert.equal(created.status, 201, JSON.stringify(created.json));
      const job = await until(created.json.id);
      assert.equal(job.status, 'completed');
      assert.deepEqual(job.counts, { total: N, succeeded: N - 1, failed: 1, done: N });
      assert.ok(job.progress.rowsPerSecond! > 0);
      const out = await lines(job.id, 'output');
      assert.deepEqual(
        out.map((o) => o.row),
        [...Array(N).keys()].filter((i) => i !== 5),
      );
      const want = await mlpReference(rows);
      for (const o of out) {
        assert.equal(o.key, `id-${o.row}`);
        assert.equal(o.group, `g,${o.row % 3}`);
        assertClose([o.score], [want[o.row]!], 1e-6, `row ${o.row}`);
      }
      const errs = await lines(job.id, 'errors');
      assert.equal(errs.length, 1);
      assert.equal(errs[0].row, 5);
      assert.equal(errs[0].key, 'id-5');
      assert.equal(errs[0].error.code, 'missing_value');
      assert.match(errs[0].error.message, /f7/);
    });

    it('JSONL with an array column → Parquet output; SSE stream ends with the finished job; webhook retried after a 500', async () => {
      const N = 9;
      const ids = Array.from({ length: N }, (_, i) => Array.from({ length: 8 }, (_, k) => (i * 7 + k * 3) % 50));
      const received: Array<{ attempt: string; body: Job }> = [];
      const hook = createServer((req: IncomingMessage, res) => {
        let b = '';
        req.on('data', (c) => (b += c));
        req.on('end', () => {
          received.push({ attempt: String(req.headers['x-switchyard-attempt']), body: JSON.parse(b) as Job });
          res.statusCode = received.length === 1 ? 500 : 204;
          res.end();
        });
      });
      await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
      try {
        const port = (hook.address() as { port: number }).port;
        const fileId = await upload('ids.jsonl', ids.map((x, i) => JSON.stringify({ doc: `d${i}`, tokens: x })).join('\n'));
        const created = await api('POST', '/api/v1/batch/jobs', {
          model: 'encoder',
          input: { fileId },
          mapping: { input_ids: 'tokens' },
          keyField: 'doc',
          outputFormat: 'parquet',
          chunkRows: 2,
          webhook: { url: `http://127.0.0.1:${port}/done` },
        });
        assert.equal(created.status, 201, JSON.stringify(created.json));
        const sse = await fetch(`${url}/api/v1/batch/jobs/${created.json.id}/events?intervalMs=50`);
        assert.equal(sse.headers.get('content-type'), 'text/event-stream');
        const events = (await sse.text())
          .split('\n\n')
          .filter(Boolean)
          .map((e) => ({ event: /^event: (.*)$/m.exec(e)![1], data: JSON.parse(/^data: (.*)$/m.exec(e)![1]!) as Job }));
        assert.equal(events.at(-1)!.event, 'end');
        assert.equal(events.at(-1)!.data.status, 'completed');
        assert.ok(events.slice(0, -1).every((e) => e.event === 'progress'));
        const res = await fetch(`${url}/api/v1/batch/jobs/${created.json.id}/output`);
        assert.equal(res.headers.get('content-type'), 'application/vnd.apache.parquet');
        const buf = new Uint8Array(await res.arrayBuffer());
        const rows = await parquetReadObjects({ file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer });
        const want = await encReference(ids);
        assert.equal(rows.length, N);
        rows.forEach((r, i) => {
          assert.equal(Number(r['row']), i);
          assert.equal(r['key'], `d${i}`);
          const emb = typeof r['embedding'] === 'string' ? JSON.parse(r['embedding'] as string) : r['embedding'];
          assertClose(emb as number[], want[i]!, 1e-5, `row ${i}`);
        });
        while (received.length < 2) await sleep(25); // no deadline: the test runner's timeout bounds a hang
        assert.deepEqual(
          received.map((r) => r.attempt),
          ['1', '2'],
        );
        assert.equal(received[1]!.body.id, created.json.id);
        assert.equal(received[1]!.body.status, 'completed');
      } finally {
        hook.close();
      }
    });

    it('Parquet from a server path; rows the model refuses fail; over the budget the job fails; retry-failed reruns exactly those rows', async () => {
      const N = 8;
      // Token ids ≥ the vocabulary (50) make the encoder's Gather fail for that row.
      const ids = Array.from({ length: N }, (_, i) => Array.from({ length: 8 }, (_, k) => (i === 2 || i === 6 ? 60 + k : (i + k) % 50)));
      const path = join(server.dir, 'ids.parquet');
      await writeFile(
        path,
        new Uint8Array(
          parquetWriteBuffer({
            columnData: [
              { name: 'n', data: ids.map((_, i) => i * 10) },
              ...Array.from({ length: 8 }, (_, k) => ({ name: `t${k}`, data: ids.map((r) => r[k]!) })),
            ],
          }),
        ),
      );
      const mapping = { input_ids: Array.from({ length: 8 }, (_, k) => `t${k}`) };
      // Chunks of 4 rows: a bad row shares its request with good ones, and only the bad row fails.
      const ok = await until(
        (await api('POST', '/api/v1/batch/jobs', { model: 'encoder', input: { path }, mapping, includedFields: ['n'], chunkRows: 4, maxFailedRows: 2 })).json
          .id,
      );
      assert.equal(ok.status, 'completed');
      assert.deepEqual(ok.counts, { total: N, succeeded: N - 2, failed: 2, done: N });
      const errs = await lines(ok.id, 'errors');
      assert.deepEqual(
        errs.map((e) => [e.row, e.n]),
        [
          [2, 20],
          [6, 60],
        ],
      );
      // Rerun alone, a row fails as a runtime failure; rerun batched with other rows by the serving core, the core's own isolation names it bad input.
      for (const e of errs) assert.ok(['SY_ERR_INFERENCE_FAILED', 'SY_ERR_INPUT_REJECTED'].includes(e.error.code), e.error.code);
      const want = await encReference(ids.filter((_, i) => i !== 2 && i !== 6));
      const got = await lines(ok.id, 'output');
      assert.deepEqual(
        got.map((o) => o.row),
        [0, 1, 3, 4, 5, 7],
      );
      got.forEach((o, i) => assertClose(o.embedding, want[i]!, 1e-5, `row ${o.row}`));
      const over = await until(
        (await api('POST', '/api/v1/batch/jobs', { model: 'encoder', input: { path }, mapping, chunkRows: 1, maxFailedRows: 1 })).json.id,
      );
      assert.equal(over.status, 'failed');
      assert.equal(over.errors![0]!.code, 'failure_budget_exceeded');
      const retry = await api('POST', `/api/v1/batch/jobs/${ok.id}/retry-failed`);
      assert.equal(retry.status, 201, JSON.stringify(retry.json));
      assert.equal(retry.json.retryOf, ok.id);
      const again = await until(retry.json.id);
      assert.deepEqual(again.counts, { total: 2, succeeded: 0, failed: 2, done: 2 });
      assert.deepEqual(
        (await lines(again.id, 'errors')).map((e) => [e.source_row, e.n]),
        [
          [2, 20],
          [6, 60],
        ],
      );
    });

    it('bad specs: SY_ERR_BATCH_SPEC naming the field; unknown model 404; another job id 404', async () => {
      const fileId = await upload('x.csv', 'a\n1\n');
      const cases: Array<[unknown, RegExp]> = [
        [{ model: 'mlp', input: { fileId }, mapping: { nope: 'a' } }, /mapping\.nope/],
        [{ model: 'mlp', input: { fileId }, includedFields: ['score'] }, /includedFields/],
        [{ model: 'mlp', input: { fileId }, outputs: ['nope'] }, /outputs/],
        [{ model: 'mlp', input: {} }, /^input/],
      ];
      for (const [body, re] of cases) {
        const r = await api('POST', '/api/v1/batch/jobs', body);
        assert.equal(r.status, 400, JSON.stringify(r.json));
        assert.equal(r.json.code, 'SY_ERR_BATCH_SPEC');
        assert.match(r.json.error, re);
      }
      const noFormat = await api('POST', '/api/v1/batch/jobs', { model: 'mlp', input: { fileId: await upload('data.bin', 'a\n') } });
      assert.equal(noFormat.json.code, 'SY_ERR_BATCH_SPEC');
      assert.equal((await api('POST', '/api/v1/batch/jobs', { model: 'ghost', input: { fileId } })).status, 404);
      assert.equal((await api('GET', '/api/v1/batch/jobs/bjob_nope')).json.code, 'SY_ERR_BATCH_NOT_FOUND');
      // A column the mapping names is missing from the file: the job fails naming it.
      const j = await until((await api('POST', '/api/v1/batch/jobs', { model: 'mlp', input: { fileId } })).json.id);
      assert.equal(j.status, 'failed');
      assert.equal(j.errors![0]!.code, 'missing_column');
    });
  });
}

suite('V2 batch jobs (SQLite)', () => '');
const pgDown = await postgresReachable().then((e) => e && `Postgres at ${PG_BASE}: ${e}`);
const schema = pgSchema();
describeNeeding('V2 batch jobs on Postgres', 'Postgres', pgDown, () => {
  after(async () => schema.drop());
  suite('V2 batch jobs (Postgres)', () => schema.url);
});
