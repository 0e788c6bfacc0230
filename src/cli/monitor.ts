/**
 * @module
 * `switchyard monitor …`: model monitoring through a running server's admin API: the sampled prediction log
 * (a table, or JSON / JSONL / CSV streamed to standard output or a file), drift reference profiles of model
 * versions (from a CSV / JSONL dataset or from logged predictions), drift and data-quality reports (current window
 * and history) and alert rules with their states and firing / resolved events.
 *
 * Longer than our ~500-line guide on purpose: one command group (`switchyard monitor`): each subcommand is option
 * declarations plus a short call to the admin API.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Command, InvalidArgumentError, Option } from 'commander';
import { durationArg, retiredOption, timeArg } from './args.js';
import { countBytes, progress } from './progress.js';
import type { AlertEventRecord, AlertRule, AlertState, DriftReport, FeatureDrift, PredictionRecord, ProfileRecord, TensorJson } from '../monitoring/index.js';
import { action, call, CliError, enc, fields, humanBytes, print, printJson, request, table, when, withConnection, type ConnFlags } from './client.js';
import { num, percent } from './routing.js';

/** The server's largest `limit` for the prediction log (MAX_QUERY_LIMIT). */
const MAX_PREDICTIONS = 100_000;

const KINDS = ['drift', 'feature_drift', 'quality', 'latency_p99', 'error_rate'] as const;
const METRICS = ['psi', 'js', 'ks', 'missing_rate', 'nan_rate', 'out_of_range_rate'] as const;

type Format = 'json' | 'jsonl' | 'csv';

interface DriftJson {
  model: string;
  reports: Array<{ version: number; report: DriftReport }>;
}
interface HistoryJson {
  model: string;
  history: Array<{ at: string; version: number; report: DriftReport }>;
}

// ---- flag parsers ----

const positiveInt =
  (what: string, max = Number.MAX_SAFE_INTEGER) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer`);
    if (n > max) throw new InvalidArgumentError(`${what} must be at most ${max}`);
    return n;
  };

function thresholdArg(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('must be a number ≥ 0');
  return n;
}

/** `--names tensor=a,b,c`: custom feature names for a tensor's columns (repeatable). */
function namesArg(v: string, prev: Record<string, string[]> = {}): Record<string, string[]> {
  const i = v.indexOf('=');
  const tensor = i < 0 ? '' : v.slice(0, i).trim();
  const names =
    i < 0
      ? []
      : v
          .slice(i + 1)
          .split(',')
          .map((s) => s.trim());
  if (tensor === '' || names.length === 0 || names.some((s) => s === ''))
    throw new InvalidArgumentError('must be tensor=name,name,… (one name per column), e.g. features=age,income,score');
  return { ...prev, [tensor]: names };
}

/** Format of a file from its extension: .csv; .jsonl / .ndjson; .json. */
function formatOfPath(path: string): Format | undefined {
  switch (extname(path).toLowerCase()) {
    case '.csv':
      return 'csv';
    case '.jsonl':
    case '.ndjson':
      return 'jsonl';
    case '.json':
      return 'json';
    default:
      return undefined;
  }
}

// ---- formatting ----

const rateText = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : percent(x));
const pText = (p: number | null): string => (p === null ? '-' : p < 0.0001 ? '<0.0001' : p.toFixed(4));
const tensorText = (t: TensorJson): string => `${t.name} ${t.datatype}[${t.shape.join(',')}]${t.truncated ? ' (shape only)' : ''}`;

/** Whether a feature got metrics (enough values in the window). */
const judged = (f: FeatureDrift): boolean => f.psi !== null || f.js !== null || f.ksPValue !== null;

/** Features by PSI, highest first; features without a PSI last (in report order). */
export function byPsi(features: readonly FeatureDrift[]): FeatureDrift[] {
  return features
    .map((f, i) => ({ f, i }))
    .sort((a, b) => {
      const x = a.f.psi ?? -Infinity;
      const y = b.f.psi ?? -Infinity;
      return y - x || a.i - b.i;
    })
    .map((e) => e.f);
}

function datasetDriftText(r: DriftReport): string {
  if (r.driftedShare === null) return 'not judged yet: no feature has enough values in the window';
  const n = r.features.filter(judged).length;
  const drifted = r.features.filter((f) => f.drifted).length;
  return `${r.datasetDrift ? 'yes' : 'no'} (${drifted} of ${n} features drifted: ${percent(r.driftedShare)})`;
}

function thresholdsText(r: DriftReport): string {
  const t = r.thresholds;
  return `a feature drifts when PSI ≥ ${num(t.psi)}, JS distance ≥ ${num(t.js)} or (numeric) KS p-value < ${num(t.ksPValue)}`;
}

function featuresTable(features: readonly FeatureDrift[]): string {
  return table(
    ['FEATURE', 'KIND', 'COUNT', 'PSI', 'JS', 'KS', 'P-VALUE', 'DRIFTED', 'MISSING', 'NAN', 'OUT OF RANGE'],
    byPsi(features).map((f) => [
      f.name,
      f.kind,
      f.count,
      num(f.psi),
      num(f.js),
      num(f.ks),
      pText(f.ksPValue),
      judged(f) ? (f.drifted ? 'yes' : 'no') : '-',
      rateText(f.quality.missingRate),
      rateText(f.quality.nanRate),
      rateText(f.quality.outOfRangeRate),
    ]),
  );
}

function describeDrift(model: string, version: number, r: DriftReport): void {
  print(`Model ${model} version ${version} (this server's window):`);
  print(
    fields([
      { Window: `${when(r.windowStart)} → ${when(r.windowEnd)}` },
      { Rows: String(r.rows) },
      { 'Dataset drift': datasetDriftText(r) },
      { 'Rejected requests': `${r.quality.shapeViolations} shape, ${r.quality.typeViolations} type violations` },
      { Thresholds: thresholdsText(r) },
    ]),
  );
  print(r.features.length === 0 ? '  (no monitored features)' : featuresTable(r.features));
}

/** What a rule watches, in words. */
export function watches(r: AlertRule): string {
  const of = `${r.model}${r.version === undefined ? '' : ` v${r.version}`}`;
  const feature = r.feature === undefined ? 'the worst feature' : `feature ${r.feature}`;
  switch (r.kind) {
    case 'drift':
      return `share of drifted features of ${of}`;
    case 'feature_drift':
      return `${r.metric ?? 'psi'} of ${feature} of ${of}`;
    case 'quality':
      return `${r.metric ?? 'missing_rate'} of ${feature} of ${of}`;
    case 'latency_p99':
      return `p99 latency (ms) of ${of}`;
    case 'error_rate':
      return `error rate of ${of}`;
  }
}

const forText = (r: AlertRule): string => (r.forMs > 0 ? `for ${num(r.forMs / 1000)} s` : 'at once');

// ---- HTTP downloads (JSONL / CSV / JSON bodies, streamed) ----

/** GET a path and return the response when it is 2xx (body unread, to stream it). */
function fetchOk(flags: ConnFlags, path: string): Promise<Response> {
  return request(flags, 'GET', path, { headers: { accept: '*/*' } });
}

/** Stream a response body to standard output (as text) or to a file; returns the bytes written. */
async function streamBody(res: Response, output: string | undefined): Promise<number> {
  if (res.body === null) return 0;
  const body = Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>);
  let bytes = 0;
  if (output === undefined) {
    const decoder = new TextDecoder();
    const write = async (s: string): Promise<void> => {
      if (s !== '' && !process.stdout.write(s)) await new Promise((r) => process.stdout.once('drain', r));
    };
    for await (const chunk of body) {
      bytes += (chunk as Buffer).length;
      await write(decoder.decode(chunk as Buffer, { stream: true }));
    }
    await write(decoder.decode());
    return bytes;
  }
  body.on('data', (c: Buffer) => (bytes += c.length));
  try {
    await pipeline(body, createWriteStream(output));
  } catch (e) {
    throw new CliError(`cannot write ${output}: ${(e as Error).message}`);
  }
  return bytes;
}

// ---- commands ----

interface PredictionFlags extends ConnFlags {
  model?: string;
  version?: number;
  since?: string;
  until?: string;
  limit?: number;
  format?: Format;
  output?: string;
}

async function predictions(flags: PredictionFlags): Promise<void> {
  let format = flags.format;
  if (format === undefined && flags.output !== undefined) {
    format = formatOfPath(flags.output);
    if (format === undefined) throw new CliError(`cannot tell the format of ${flags.output} from its extension: give --format json, jsonl or csv`);
  }
  if (flags.json && format !== undefined)
    throw new CliError('--json prints the response as JSON; it cannot be combined with --format or --output (use --format json)');
  const q = new URLSearchParams();
  if (flags.model !== undefined) q.set('model', flags.model);
  if (flags.version !== undefined) q.set('version', String(flags.version));
  if (flags.since !== undefined) q.set('since', flags.since);
  if (flags.until !== undefined) q.set('until', flags.until);
  if (flags.limit !== undefined) q.set('limit', String(flags.limit));
  if (format !== undefined) {
    if (format !== 'json') q.set('format', format);
    const res = await fetchOk(flags, `/api/v1/predictions?${q.toString()}`);
    const bytes = await streamBody(res, flags.output);
    if (flags.output !== undefined) print(`Wrote ${flags.output} (${format}, ${humanBytes(bytes)}).`);
    return;
  }
  const qs = q.toString();
  const r = await call<{ predictions: PredictionRecord[] }>(flags, 'GET', `/api/v1/predictions${qs ? `?${qs}` : ''}`);
  if (flags.json) return printJson(r);
  if (r.predictions.length === 0) return print('No logged predictions (is the prediction log sampling this model? see serve --monitor-sample-rate).');
  print(
    table(
      ['AT', 'MODEL', 'VERSION', 'TENANT', 'ARM', 'REQUEST ID', 'LATENCY', 'INPUTS', 'OUTPUTS'],
      r.predictions.map((p) => [
        when(p.at),
        p.model,
        p.version,
        p.tenant || '-',
        p.arm ?? '-',
        p.requestId,
        `${num(p.latencyMs)} ms`,
        p.inputs.map(tensorText).join('\n') || '-',
        p.outputs.map(tensorText).join('\n') || '-',
      ]),
    ),
  );
  const limit = flags.limit ?? 1000;
  print(
    `${r.predictions.length} prediction${r.predictions.length === 1 ? '' : 's'}, oldest first${r.predictions.length >= limit ? ` (the first ${limit}: page on with --since, or raise --limit)` : ''}.`,
  );
}

const profilePath = (model: string, version: string): string => `/api/v1/models/${enc(model)}/versions/${enc(version)}/profile`;

function describeProfile(p: ProfileRecord): void {
  print(
    fields([
      { Model: p.model },
      { Version: String(p.version) },
      { Source: p.source },
      { Rows: String(p.profile.rows) },
      { Features: String(p.profile.features.length) },
      { Created: `${when(p.createdAt)} by ${p.createdBy}` },
    ]),
  );
  if (p.profile.features.length === 0) return print('  (no features)');
  print(
    table(
      ['FEATURE', 'SOURCE', 'TENSOR', 'KIND', 'MIN', 'MAX', 'CATEGORIES'],
      p.profile.features.map((f) => {
        const counts = (f.categorical as { counts?: Record<string, number> } | undefined)?.counts;
        const cats = counts === undefined ? '-' : String(Object.keys(counts).length);
        return [f.spec.name, f.spec.source, `${f.spec.tensor}[${f.spec.column}]`, f.spec.kind, num(f.min), num(f.max), cats];
      }),
    ),
  );
}

interface ProfileSetFlags extends ConnFlags {
  file?: string;
  format?: 'csv' | 'jsonl';
  fromLog?: boolean;
  since?: string;
  until?: string;
  limit?: number;
  names?: Record<string, string[]>;
}

async function profileSet(model: string, version: string, flags: ProfileSetFlags): Promise<void> {
  if ((flags.file === undefined) === (flags.fromLog !== true))
    throw new CliError('give the reference data either with --file (a CSV or JSONL dataset) or with --from-log (the logged predictions), not both');
  let rec: ProfileRecord;
  if (flags.file !== undefined) {
    const logOnly = (['since', 'until', 'limit', 'names'] as const).filter((k) => flags[k] !== undefined);
    if (logOnly.length) throw new CliError(`${logOnly.map((k) => `--${k}`).join(', ')} only apply with --from-log`);
    const file = flags.file;
    const ext = formatOfPath(file);
    const format = flags.format ?? (ext === 'csv' ? 'csv' : ext === 'jsonl' || ext === 'json' ? 'jsonl' : undefined);
    if (format === undefined) throw new CliError(`cannot tell the format of ${file} from its extension: give --format csv or jsonl`);
    try {
      if (!(await stat(file)).isFile()) throw new Error('not a file');
    } catch (e) {
      throw new CliError(`cannot read ${file}: ${(e as Error).message}`);
    }
    const bar = progress(`profile ${model}/${version}`, (await stat(file)).size, 'bytes');
    const body = (Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>).pipeThrough(countBytes(bar));
    try {
      rec = await call<ProfileRecord>(flags, 'POST', `${profilePath(model, version)}?format=${format}`, {
        body,
        headers: { 'content-type': format === 'csv' ? 'text/csv' : 'application/x-ndjson' },
      });
    } finally {
      bar.done();
    }
  } else {
    if (flags.format !== undefined) throw new CliError('--format only applies with --file');
    const json: Record<string, unknown> = { source: 'log' };
    if (flags.since !== undefined) json['since'] = flags.since;
    if (flags.until !== undefined) json['until'] = flags.until;
    if (flags.limit !== undefined) json['limit'] = flags.limit;
    if (flags.names !== undefined) json['names'] = flags.names;
    rec = await call<ProfileRecord>(flags, 'POST', profilePath(model, version), { json });
  }
  if (flags.json) return printJson(rec);
  print(
    `Reference profile of ${rec.model} version ${rec.version} set from ${rec.source}: ${rec.profile.rows} rows, ${rec.profile.features.length} features. Drift is measured against it from now on.\n`,
  );
  describeProfile(rec);
}

async function profileShow(model: string, version: string, flags: ConnFlags): Promise<void> {
  const rec = await call<ProfileRecord>(flags, 'GET', profilePath(model, version));
  if (flags.json) return printJson(rec);
  describeProfile(rec);
}

async function profileDelete(model: string, version: string, flags: ConnFlags): Promise<void> {
  await call<null>(flags, 'DELETE', profilePath(model, version));
  if (flags.json) return printJson({ model, version, deleted: true });
  print(`Removed the reference profile of ${model} version ${version}; its drift monitoring stops.`);
}

interface DriftFlags extends ConnFlags {
  version?: string;
  history?: boolean;
  since?: string;
  until?: string;
  limit?: number;
}

async function drift(model: string, flags: DriftFlags): Promise<void> {
  if (flags.history) return driftHistory(model, flags);
  const extra = (['since', 'until', 'limit'] as const).filter((k) => flags[k] !== undefined);
  if (extra.length) throw new CliError(`${extra.map((k) => `--${k}`).join(', ')} only apply with --history`);
  const qs = flags.version === undefined ? '' : `?version=${enc(flags.version)}`;
  const r = await call<DriftJson>(flags, 'GET', `/api/v1/models/${enc(model)}/drift${qs}`);
  if (flags.json) return printJson(r);
  if (r.reports.length === 0)
    return print(
      `No version of ${r.model} has a reference profile: set one with "switchyard monitor profile set ${r.model} <version> --file data.csv" (or --from-log).`,
    );
  r.reports.forEach(({ version, report }, i) => {
    if (i > 0) print('');
    describeDrift(r.model, version, report);
  });
}

async function driftHistory(model: string, flags: DriftFlags): Promise<void> {
  const q = new URLSearchParams();
  if (flags.version !== undefined) q.set('version', flags.version);
  if (flags.since !== undefined) q.set('since', flags.since);
  if (flags.until !== undefined) q.set('until', flags.until);
  if (flags.limit !== undefined) q.set('limit', String(flags.limit));
  const qs = q.toString();
  const r = await call<HistoryJson>(flags, 'GET', `/api/v1/models/${enc(model)}/drift/history${qs ? `?${qs}` : ''}`);
  if (flags.json) return printJson(r);
  if (r.history.length === 0)
    return print(`No drift reports stored for ${r.model} yet (they are computed every --drift-eval-ms for versions with a reference profile and traffic).`);
  print(
    table(
      ['AT', 'VERSION', 'ROWS', 'DATASET DRIFT', 'DRIFTED SHARE', 'DRIFTED FEATURES', 'HIGHEST PSI'],
      r.history.map(({ at, version, report }) => {
        const top = byPsi(report.features)[0];
        return [
          when(at),
          version,
          report.rows,
          report.driftedShare === null ? '-' : report.datasetDrift ? 'yes' : 'no',
          rateText(report.driftedShare),
          report.features.filter((f) => f.drifted).length,
          top === undefined || top.psi === null ? '-' : `${num(top.psi)} (${top.name})`,
        ];
      }),
    ),
  );
  print(`${r.history.length} report${r.history.length === 1 ? '' : 's'}, newest first.`);
}

async function alertStates(flags: ConnFlags): Promise<void> {
  const [s, rules] = await Promise.all([
    call<{ alerts: AlertState[] }>(flags, 'GET', '/api/v1/alerts'),
    call<{ rules: AlertRule[] }>(flags, 'GET', '/api/v1/alerts/rules'),
  ]);
  if (flags.json) return printJson(s);
  if (s.alerts.length === 0) return print('No alert rules (add one with "switchyard monitor alerts set").');
  const byId = new Map(rules.rules.map((r) => [r.id, r]));
  print(
    table(
      ['RULE', 'STATE', 'SINCE', 'VALUE', 'THRESHOLD', 'WATCHES'],
      s.alerts.map((a) => {
        const r = byId.get(a.rule);
        return [
          a.rule,
          a.state,
          a.since === null ? '-' : when(a.since),
          a.value === null ? '-' : num(a.value),
          r ? `> ${num(r.threshold)} ${forText(r)}` : '-',
          r ? watches(r) : '-',
        ];
      }),
    ),
  );
  print("States are this server's (each replica evaluates its own rules); VALUE - = no data or not evaluated yet.");
}

interface AlertSetFlags extends ConnFlags {
  kind: AlertRule['kind'];
  model: string;
  threshold: number;
  version?: number;
  feature?: string;
  metric?: string;
  for?: number;
  webhook?: string;
  secret?: string;
  disabled?: boolean;
  description?: string;
}

async function alertSet(id: string, flags: AlertSetFlags): Promise<void> {
  if (flags.secret !== undefined && flags.webhook === undefined) throw new CliError('--secret signs webhook deliveries: it needs --webhook');
  const rule: Record<string, unknown> = { kind: flags.kind, model: flags.model, threshold: flags.threshold };
  if (flags.version !== undefined) rule['version'] = flags.version;
  if (flags.feature !== undefined) rule['feature'] = flags.feature;
  if (flags.metric !== undefined) rule['metric'] = flags.metric;
  if (flags.for !== undefined) rule['forMs'] = flags.for;
  if (flags.webhook !== undefined) rule['webhook'] = flags.secret === undefined ? { url: flags.webhook } : { url: flags.webhook, secret: flags.secret };
  if (flags.disabled) rule['enabled'] = false;
  if (flags.description !== undefined) rule['description'] = flags.description;
  const r = await call<AlertRule>(flags, 'PUT', `/api/v1/alerts/rules/${enc(id)}`, { json: rule });
  if (flags.json) return printJson(r);
  const hook =
    r.webhook === undefined
      ? 'no webhook (events are recorded only)'
      : `webhook ${r.webhook.url}${flags.secret === undefined ? ' (unsigned)' : ' (HMAC-signed)'}`;
  print(`Alert rule ${r.id} set${r.enabled ? '' : ' (disabled)'}: fires when the ${watches(r)} is above ${num(r.threshold)} ${forText(r)}; ${hook}.`);
}

async function alertRules(flags: ConnFlags): Promise<void> {
  const r = await call<{ rules: AlertRule[] }>(flags, 'GET', '/api/v1/alerts/rules');
  if (flags.json) return printJson(r);
  if (r.rules.length === 0) return print('No alert rules.');
  print(
    table(
      ['ID', 'KIND', 'MODEL', 'VERSION', 'FEATURE', 'METRIC', 'THRESHOLD', 'FOR', 'WEBHOOK', 'ENABLED', 'DESCRIPTION'],
      r.rules.map((x) => [
        x.id,
        x.kind,
        x.model,
        x.version ?? 'any',
        x.feature ?? (x.kind === 'feature_drift' || x.kind === 'quality' ? 'worst' : '-'),
        x.metric ?? '-',
        num(x.threshold),
        x.forMs > 0 ? `${num(x.forMs / 1000)} s` : '0',
        x.webhook?.url ?? '-',
        x.enabled ? 'yes' : 'no',
        x.description ?? '-',
      ]),
    ),
  );
}

async function alertDelete(id: string, flags: ConnFlags): Promise<void> {
  await call<null>(flags, 'DELETE', `/api/v1/alerts/rules/${enc(id)}`);
  if (flags.json) return printJson({ id, deleted: true });
  print(`Deleted alert rule ${id} (resolved first if it was firing).`);
}

async function alertEvents(flags: ConnFlags & { rule?: string; limit?: number; before?: number }): Promise<void> {
  const q = new URLSearchParams();
  if (flags.rule !== undefined) q.set('rule', flags.rule);
  if (flags.limit !== undefined) q.set('limit', String(flags.limit));
  if (flags.before !== undefined) q.set('before', String(flags.before));
  const qs = q.toString();
  const r = await call<{ events: AlertEventRecord[] }>(flags, 'GET', `/api/v1/alerts/events${qs ? `?${qs}` : ''}`);
  if (flags.json) return printJson(r);
  if (r.events.length === 0) return print('No alert events.');
  print(
    table(
      ['ID', 'AT', 'RULE', 'STATE', 'VALUE', 'DELIVERY', 'MESSAGE'],
      r.events.map((e) => [e.id, when(e.at), e.rule, e.state, num(e.value), e.deliveryDetail ? `${e.delivery} (${e.deliveryDetail})` : e.delivery, e.message]),
    ),
  );
}

/** `switchyard monitor`: prediction log, reference profiles, drift and alerts on a running server. */
export function monitorCommand(): Command {
  const monitor = new Command('monitor').description(
    'Model monitoring on a running Switchyard server: the sampled prediction log, drift reference profiles, drift and data-quality reports, alert rules and events.',
  );

  withConnection(
    monitor
      .command('predictions')
      .description('Logged (sampled) predictions, oldest first: a table, or --format json|jsonl|csv streamed to standard output or --output FILE.')
      .option('--model <name>', 'only this model (required with a tenant key)')
      .addOption(new Option('--version <n>', 'only this version number').argParser(positiveInt('--version')))
      .addOption(new Option('--since <time>', 'from this time, inclusive: ISO-8601 or a duration ago (30m, 2h, 7d)').argParser(timeArg))
      .addOption(new Option('--until <time>', 'up to this time, inclusive: ISO-8601 or a duration ago').argParser(timeArg))
      .addOption(
        new Option('--limit <n>', `at most this many records (server default 1000, at most ${MAX_PREDICTIONS})`).argParser(
          positiveInt('--limit', MAX_PREDICTIONS),
        ),
      )
      .addOption(
        new Option(
          '--format <format>',
          'export format: json ({"predictions": [...]}), jsonl (one record per line) or csv (one line per request row, one column per tensor element); default: a table',
        ).choices(['json', 'jsonl', 'csv']),
      )
      .option(
        '-o, --output <file>',
        'write the export to this file instead of standard output (format from --format, else the extension: .json, .jsonl/.ndjson, .csv)',
      ),
  ).action(action(predictions));

  const profile = monitor
    .command('profile')
    .description("A model version's drift reference profile: per-feature bins from a dataset or from its logged predictions.");

  withConnection(
    profile
      .command('set')
      .description(
        'Build and store the reference profile of a version, from a dataset (--file: CSV with a header of feature names, or JSONL objects) or from its logged predictions (--from-log). Replaces the previous one.',
      )
      .argument('<model>', 'registered model name')
      .argument('<version>', 'version number or alias')
      .option(
        '-f, --file <path>',
        'reference dataset: CSV (header = feature names, e.g. features[0],features[1],…) or JSONL (feature → value, or tensor name → array)',
      )
      .addOption(new Option('--format <format>', 'dataset format (default: from the extension: .csv, .jsonl/.ndjson/.json)').choices(['csv', 'jsonl']))
      .option('--from-log', "build it from the version's logged predictions instead (the prediction log must be sampling the model)")
      .addOption(new Option('--since <time>', 'with --from-log: predictions from this time (ISO-8601 or a duration ago: 30m, 2h, 7d)').argParser(timeArg))
      .addOption(new Option('--until <time>', 'with --from-log: predictions up to this time').argParser(timeArg))
      .addOption(
        new Option('--limit <n>', 'with --from-log: at most this many logged requests (server default 10000, at most 100000)').argParser(
          positiveInt('--limit', MAX_PREDICTIONS),
        ),
      )
      .addOption(
        new Option('--names <tensor=a,b,…>', 'with --from-log: feature names for the columns of a tensor (repeatable; default <tensor>[i])').argParser(
          namesArg,
        ),
      ),
  ).action(action(profileSet));

  withConnection(
    profile
      .command('show')
      .description('Show the reference profile of a version: source, rows, and its features with kind and reference min / max.')
      .argument('<model>', 'registered model name')
      .argument('<version>', 'version number or alias'),
  ).action(action(profileShow));

  withConnection(
    profile
      .command('delete')
      .description('Remove the reference profile of a version: its drift monitoring stops.')
      .argument('<model>', 'registered model name')
      .argument('<version>', 'version number or alias'),
  ).action(action(profileDelete));

  withConnection(
    monitor
      .command('drift')
      .description(
        "Drift and data quality of a model over this server's current window, per version with a reference profile: rows, dataset drift, and per feature PSI, Jensen-Shannon distance, KS statistic and p-value, missing / NaN / out-of-range rates (highest PSI first). --history lists the stored periodic reports.",
      )
      .argument('<model>', 'registered model name')
      .option('--version <version>', 'only this version number or alias (default: every version with a profile)')
      .option('--history', 'the drift reports stored every --drift-eval-ms, newest first, instead of the current window')
      .addOption(new Option('--since <time>', 'with --history: reports from this time (ISO-8601 or a duration ago: 30m, 2h, 7d)').argParser(timeArg))
      .addOption(new Option('--until <time>', 'with --history: reports up to this time').argParser(timeArg))
      .addOption(
        new Option('--limit <n>', 'with --history: at most this many reports (server default 100, at most 1000)').argParser(positiveInt('--limit', 1000)),
      ),
  ).action(action(drift));

  const alerts = monitor
    .command('alerts')
    .description(
      'Alert rules on drift, data quality, p99 latency and error rate; their states (the default: "switchyard monitor alerts") and firing / resolved events.',
    );

  withConnection(
    alerts
      .command('status', { isDefault: true })
      .description(
        'The current state of every alert rule on this server (inactive, pending, firing) with its last value; what "switchyard monitor alerts" runs.',
      ),
  ).action(action(alertStates));

  withConnection(
    alerts
      .command('set')
      .description(
        'Create or replace an alert rule: it fires when the watched value stays above --threshold for --for, and resolves when it is at or below; each transition is recorded and POSTed to the webhook.',
      )
      .argument('<id>', 'rule id: letters, digits, _ . - (at most 64)')
      .addOption(
        new Option(
          '--kind <kind>',
          "what it watches: drift (share of drifted features), feature_drift (a feature's psi / js / ks), quality (a feature's missing / NaN / out-of-range rate), latency_p99 (ms), error_rate (0..1)",
        )
          .choices([...KINDS])
          .makeOptionMandatory(),
      )
      .requiredOption('--model <name>', 'the model it watches')
      .addOption(new Option('--threshold <x>', 'fires when the value is above this (rates 0..1, latency in ms)').argParser(thresholdArg).makeOptionMandatory())
      .addOption(new Option('--version <n>', 'only this version number (default: every monitored version, the worst wins)').argParser(positiveInt('--version')))
      .option('--feature <name>', 'feature_drift / quality: only this feature (default: the worst feature)')
      .addOption(
        new Option('--metric <metric>', 'feature_drift: psi (default), js or ks; quality: missing_rate (default), nan_rate or out_of_range_rate').choices([
          ...METRICS,
        ]),
      )
      .addOption(
        new Option(
          '--for <duration>',
          'how long the value must stay above the threshold before the rule fires: a duration such as 30s or 10m (default 0s: at once)',
        ).argParser(durationArg('--for', { zero: true })),
      )
      .addOption(retiredOption('--for-ms <ms>', '--for <duration> (e.g. --for 10m)'))
      .option('--webhook <url>', 'http(s) URL that receives each firing / resolved event as JSON (retried with backoff)')
      .option('--secret <secret>', 'with --webhook: sign deliveries with HMAC-SHA256 (x-switchyard-signature); stored on the server, never shown')
      .option('--disabled', 'store the rule disabled (not evaluated; a firing rule resolves)')
      .option('-d, --description <text>', 'description'),
  ).action(action(alertSet));

  withConnection(alerts.command('rules').description('List the alert rules (webhook secrets are never shown).')).action(action(alertRules));

  withConnection(alerts.command('delete').description('Delete an alert rule; a firing one is resolved first.').argument('<id>', 'rule id')).action(
    action(alertDelete),
  );

  withConnection(
    alerts
      .command('events')
      .description('Firing and resolved transitions with their webhook delivery status, newest first.')
      .option('--rule <id>', 'only this rule')
      .addOption(new Option('--limit <n>', 'at most this many events (server default 100, at most 1000)').argParser(positiveInt('--limit', 1000)))
      .addOption(new Option('--before <id>', 'only events with a smaller id (paging)').argParser(positiveInt('--before'))),
  ).action(action(alertEvents));

  return monitor;
}
