/**
 * @module
 * `switchyard batch …`: V2 batch jobs of a running server (`/api/v1/batch`): create a job from a local file
 * (uploaded) or a server path, list, show, cancel, download its output or error file, and retry its failed rows.
 * `--wait` follows the job's progress stream (SSE) until it ends, with a progress bar on stderr when stderr is
 * a terminal (rows done, rows/s, ETA, failed rows) and nothing while it runs otherwise; the exit status is 1
 * when the job did not complete.
 */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Command, InvalidArgumentError, Option } from 'commander';
import { action, call, CliError, enc, fields, print, printJson, request, table, when, withConnection, type ConnFlags } from './client.js';

interface JobJson {
  id: string;
  status: string;
  model: string;
  version: string | null;
  format: string;
  outputFormat: string;
  retryOf: string | null;
  counts: { total: number; succeeded: number; failed: number; done: number };
  progress: { fraction: number; rowsPerSecond: number | null; etaSeconds: number | null };
  outputFileId: string | null;
  errorFileId: string | null;
  errors: Array<{ code: string; message: string }> | null;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
}

const ENDED = new Set(['completed', 'failed', 'cancelled']);

function intArg(min: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`must be a whole number ≥ ${min}`);
    return n;
  };
}

/** `input=column` or `input=c1,c2,...` (one column per element). */
function mapArg(v: string, prev: Record<string, string | string[]> = {}): Record<string, string | string[]> {
  const i = v.indexOf('=');
  if (i <= 0 || i === v.length - 1) throw new InvalidArgumentError('must be INPUT=COLUMN or INPUT=COL1,COL2,...');
  const cols = v.slice(i + 1).split(',');
  return { ...prev, [v.slice(0, i)]: cols.length === 1 ? cols[0]! : cols };
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

const num = (x: number | null, digits = 0): string => (x === null ? '-' : x.toFixed(digits));

function duration(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return '-';
  if (s < 60) return `${Math.ceil(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.ceil(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** One line of progress: bar, percentage, rows, rows/s, ETA, failed rows. */
export function progressLine(j: JobJson, width = 30): string {
  const f = Math.min(1, Math.max(0, j.progress.fraction));
  const full = Math.round(f * width);
  const bar = `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
  return `${bar} ${(f * 100).toFixed(0).padStart(3)}%  ${j.counts.done}/${j.counts.total || '?'} rows  ${num(j.progress.rowsPerSecond)} rows/s  ETA ${duration(j.progress.etaSeconds)}  failed ${j.counts.failed}  ${j.status}`;
}

function show(flags: ConnFlags, j: JobJson): void {
  if (flags.json) return printJson(j);
  const rows: Array<Record<string, string>> = [
    { id: j.id },
    { status: j.status },
    { model: j.version === null ? j.model : `${j.model}:${j.version}` },
    { rows: `${j.counts.done}/${j.counts.total} (${j.counts.succeeded} ok, ${j.counts.failed} failed)` },
    { 'rows/s': num(j.progress.rowsPerSecond, 1) },
    { eta: duration(j.progress.etaSeconds) },
    { output: j.outputFileId === null ? '-' : `${j.outputFormat} (switchyard batch download ${j.id})` },
    { errors: j.errorFileId === null ? '-' : `switchyard batch download ${j.id} --errors` },
    { created: when(j.createdAt) },
  ];
  if (j.retryOf !== null) rows.push({ 'retry of': j.retryOf });
  for (const e of j.errors ?? []) rows.push({ [e.code]: e.message });
  print(fields(rows));
}

/** Follow the job's SSE stream until it ends; a bar on stderr when it is a terminal. Returns the final job. */
async function follow(flags: ConnFlags, id: string): Promise<JobJson> {
  const tty = process.stderr.isTTY === true;
  const res = await request(flags, 'GET', `/api/v1/batch/jobs/${enc(id)}/events?intervalMs=${tty ? 250 : 1000}`, { headers: { accept: 'text/event-stream' } });
  let last: JobJson | null = null;
  let buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let at: number;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, at);
      buf = buf.slice(at + 2);
      const data = /^data: (.*)$/m.exec(event)?.[1];
      if (data === undefined) continue;
      last = JSON.parse(data) as JobJson;
      if (tty) process.stderr.write(`\r\x1b[2K${progressLine(last)}`);
    }
  }
  if (tty) process.stderr.write('\n');
  if (last === null || !ENDED.has(last.status)) last = await call<JobJson>(flags, 'GET', `/api/v1/batch/jobs/${enc(id)}`);
  return last;
}

async function finish(flags: ConnFlags & { wait?: boolean }, j: JobJson): Promise<void> {
  const done = flags.wait ? await follow(flags, j.id) : j;
  show(flags, done);
  if (flags.wait && done.status !== 'completed')
    throw new CliError(`job ${done.id} ended ${done.status}${done.errors?.[0] ? `: ${done.errors[0].message}` : ''}`);
}

interface CreateFlags extends ConnFlags {
  model: string;
  modelVersion?: string;
  input?: string;
  inputPath?: string;
  format?: string;
  map?: Record<string, string | string[]>;
  keyField?: string;
  include?: string[];
  outputs?: string;
  outputFormat?: string;
  maxFailedRows?: number;
  chunkRows?: number;
  webhook?: string;
  wait?: boolean;
}

async function create(flags: CreateFlags): Promise<void> {
  if ((flags.input === undefined) === (flags.inputPath === undefined))
    throw new CliError('give exactly one of --input FILE (uploaded) and --input-path PATH (read by the server)');
  let input: { fileId: string } | { path: string };
  if (flags.input !== undefined) {
    let bytes: Buffer;
    try {
      bytes = await readFile(flags.input);
    } catch (e) {
      throw new CliError(`cannot read ${flags.input}: ${(e as Error).message}`);
    }
    const form = new FormData();
    form.append('file', new Blob([bytes]), basename(flags.input));
    input = { fileId: (await call<{ id: string }>(flags, 'POST', '/api/v1/batch/files', { body: form })).id };
  } else input = { path: flags.inputPath! };
  const body: Record<string, unknown> = { model: flags.model, input };
  if (flags.modelVersion !== undefined) body['version'] = flags.modelVersion;
  if (flags.format !== undefined) body['format'] = flags.format;
  if (flags.map !== undefined) body['mapping'] = flags.map;
  if (flags.keyField !== undefined) body['keyField'] = flags.keyField;
  if (flags.include !== undefined) body['includedFields'] = flags.include;
  if (flags.outputs !== undefined) body['outputs'] = flags.outputs.split(',');
  if (flags.outputFormat !== undefined) body['outputFormat'] = flags.outputFormat;
  if (flags.maxFailedRows !== undefined) body['maxFailedRows'] = flags.maxFailedRows;
  if (flags.chunkRows !== undefined) body['chunkRows'] = flags.chunkRows;
  if (flags.webhook !== undefined) body['webhook'] = { url: flags.webhook };
  await finish(flags, await call<JobJson>(flags, 'POST', '/api/v1/batch/jobs', { json: body }));
}

async function list(flags: ConnFlags & { limit?: number }): Promise<void> {
  const r = await call<{ jobs: JobJson[]; hasMore: boolean }>(flags, 'GET', `/api/v1/batch/jobs?limit=${flags.limit ?? 50}`);
  if (flags.json) return printJson(r);
  if (r.jobs.length === 0) return print('No batch jobs.');
  print(
    table(
      ['ID', 'STATUS', 'MODEL', 'ROWS', 'FAILED', 'ROWS/S', 'CREATED'],
      r.jobs.map((j) => [j.id, j.status, j.model, `${j.counts.done}/${j.counts.total}`, j.counts.failed, num(j.progress.rowsPerSecond, 1), when(j.createdAt)]),
    ),
  );
}

async function get(id: string, flags: ConnFlags & { wait?: boolean }): Promise<void> {
  await finish(flags, await call<JobJson>(flags, 'GET', `/api/v1/batch/jobs/${enc(id)}`));
}

async function cancel(id: string, flags: ConnFlags): Promise<void> {
  show(flags, await call<JobJson>(flags, 'POST', `/api/v1/batch/jobs/${enc(id)}/cancel`));
}

async function retryFailed(id: string, flags: ConnFlags & { wait?: boolean }): Promise<void> {
  await finish(flags, await call<JobJson>(flags, 'POST', `/api/v1/batch/jobs/${enc(id)}/retry-failed`));
}

async function download(id: string, flags: ConnFlags & { errors?: boolean; output?: string }): Promise<void> {
  const res = await request(flags, 'GET', `/api/v1/batch/jobs/${enc(id)}/${flags.errors ? 'errors' : 'output'}`, { headers: { accept: '*/*' } });
  const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  if (flags.output === undefined || flags.output === '-') {
    await pipeline(body, process.stdout, { end: false });
    return;
  }
  await pipeline(body, createWriteStream(flags.output));
  process.stderr.write(`wrote ${flags.output}\n`);
}

const waitOption = (): Option => new Option('--wait', 'follow the job until it ends (a progress bar when stderr is a terminal); exit 1 unless it completed');

export function batchCommand(): Command {
  const batch = new Command('batch').description('V2 batch jobs: score every row of a JSONL, CSV or Parquet file with a model (/api/v1/batch; docs/batch.md)');
  withConnection(
    batch
      .command('create')
      .description('Create a job: upload --input FILE (or name --input-path PATH on the server) and score its rows with --model')
      .requiredOption('--model <name>', 'the model that scores the rows')
      .option('--model-version <version>', "a version or alias (default: the model's routing)")
      .option('--input <file>', 'a local file, uploaded first')
      .option('--input-path <path>', 'a file the server reads (platform key only)')
      .addOption(new Option('--format <format>', 'input format (default: from the file name)').choices(['jsonl', 'csv', 'parquet']))
      .option(
        '--map <input=columns>',
        'map a model input to a column (an array, or a scalar for a one-element input) or to COL1,COL2,... (one element each); repeatable; unmapped inputs read the column of their own name',
        mapArg,
      )
      .option('--key-field <column>', 'copied to each output row as "key"')
      .option('--include <column>', 'a column copied to each output and error row (repeatable)', collect)
      .option('--outputs <names>', 'outputs to write, comma-separated (default: all)')
      .addOption(new Option('--output-format <format>', 'output file format').choices(['jsonl', 'parquet']).default('jsonl'))
      .option('--max-failed-rows <n>', 'fail the job when more rows fail (default: never)', intArg(0))
      .option('--chunk-rows <n>', 'rows per chunk (the unit of lease, commit and redo; default 1000)', intArg(1))
      .option('--webhook <url>', 'POSTed the job (JSON) when it ends')
      .addOption(waitOption()),
  ).action(action(create));
  withConnection(batch.command('list').description('The jobs, newest first').option('--limit <n>', 'at most this many (default 50)', intArg(1))).action(
    action(list),
  );
  withConnection(batch.command('get').description('A job: status, rows done, rows/s, ETA, files').argument('<id>').addOption(waitOption())).action(action(get));
  withConnection(batch.command('cancel').description('Cancel a job (rows already committed stay in its output)').argument('<id>')).action(action(cancel));
  withConnection(
    batch
      .command('download')
      .description("Write a job's output file (or --errors: its error file) to --output or stdout")
      .argument('<id>')
      .option('--errors', 'the error file (failed rows with their reason) instead of the output')
      .option('-o, --output <file>', 'where to write it (default: stdout)'),
  ).action(action(download));
  withConnection(
    batch.command('retry-failed').description('A new job over the rows of an ended job that failed when they ran').argument('<id>').addOption(waitOption()),
  ).action(action(retryFailed));
  return batch;
}
