/**
 * @module
 * `switchyard experiments …`: experiments on a model's routing arms through a running server's admin API:
 * create, list, show, stop, delete, outcome events (one, or a JSON Lines file in batches) and the report
 * (per-arm outcomes, each arm vs the control with 95% confidence intervals and p-values, sample-ratio-mismatch
 * check, guardrails, shadows).
 */
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { durationArg, retiredOption } from './args.js';
import type { ArmReport, Comparison, ExperimentRecord, ExperimentStatus, GuardrailStatus, SrmTest } from '../experiments/index.js';
import { action, call, CliError, enc, fields, print, printJson, table, when, withConnection, type ConnFlags } from './client.js';
import { armsTable, ms, num, percent, shadowStatsTable, type ShadowStatsRow } from './routing.js';

/** Events per request (the server's limit, MAX_EVENTS_PER_CALL). */
const EVENTS_PER_CALL = 1000;

interface ReportJson {
  experiment: ExperimentRecord;
  generatedAt: string;
  arms: ArmReport[];
  comparisons: Comparison[];
  srm: SrmTest | null;
  unattributedEvents: number;
  guardrails: GuardrailStatus[];
  shadows: ShadowStatsRow[];
}

interface EventIn {
  unit: string;
  metric: string;
  value?: number;
  at?: string;
}

// ---- parsers and formatting ----

const positiveInt =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer`);
    return n;
  };

/** A rate 0..1, or a percentage such as 5%. */
function rateArg(v: string): number {
  const pct = v.endsWith('%');
  const n = Number(pct ? v.slice(0, -1) : v);
  const r = pct ? n / 100 : n;
  if (v.trim() === '' || !Number.isFinite(n) || r < 0 || r > 1) throw new InvalidArgumentError('must be a rate from 0 to 1, or a percentage such as 5%');
  return r;
}

function numberArg(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number');
  return n;
}

function isoArg(v: string): string {
  if (Number.isNaN(Date.parse(v))) throw new InvalidArgumentError('must be an ISO-8601 time, e.g. 2025-01-31T12:00:00Z');
  return v;
}

const signed = (s: string): string => (s.startsWith('-') || /^0(?:\.0*)?$/.test(s) ? s : `+${s}`);
/** A rate as a percentage with 2 decimals. */
const rate = (r: number): string => `${(r * 100).toFixed(2)}%`;
/** A difference of rates in percentage points (2 decimals, signed). */
const pp = (d: number): string => signed((d * 100).toFixed(2));
/** Decimals that show about 4 significant digits of the largest of these values (0..6). */
function decimalsFor(values: readonly number[]): number {
  const max = Math.max(0, ...values.filter(Number.isFinite).map(Math.abs));
  return max === 0 ? 2 : Math.min(6, Math.max(0, 3 - Math.floor(Math.log10(max))));
}
const pval = (p: number): string => (p < 0.0001 ? '<0.0001' : p.toFixed(4)) + (p < 0.05 ? ' *' : '');

function guardrailsText(e: ExperimentRecord): string {
  const g = e.guardrails;
  const parts = [
    `max error rate ${g.maxErrorRate === undefined ? '(not checked)' : percent(g.maxErrorRate)}`,
    `max p99 ${g.maxP99Ms === undefined ? '(not checked)' : `${g.maxP99Ms} ms`}`,
    `judged from ${g.minRequests} requests`,
    `auto rollback ${g.autoRollback ? 'on' : 'off'}`,
  ];
  return parts.join('; ');
}

const armsText = (e: ExperimentRecord): string => {
  const total = e.arms.reduce((s, a) => s + a.weight, 0);
  return e.arms.map((a) => `${a.name}=${a.target} ${total > 0 ? percent(a.weight / total) : '0%'}`).join(', ');
};

const statusText = (e: ExperimentRecord): string =>
  e.status === 'running' ? 'running' : `${e.status}${e.stoppedAt ? ` at ${when(e.stoppedAt)}` : ''}${e.stopReason ? ` (${e.stopReason})` : ''}`;

// ---- commands ----

async function list(flags: ConnFlags & { model?: string; status?: ExperimentStatus }): Promise<void> {
  const q = new URLSearchParams();
  if (flags.model !== undefined) q.set('model', flags.model);
  if (flags.status !== undefined) q.set('status', flags.status);
  const qs = q.toString();
  const r = await call<ExperimentRecord[]>(flags, 'GET', `/api/v1/experiments${qs ? `?${qs}` : ''}`);
  if (flags.json) return printJson(r);
  if (r.length === 0) return print('No experiments.');
  print(
    table(
      ['ID', 'MODEL', 'STATUS', 'ARMS', 'CONTROL', 'CREATED', 'BY', 'DESCRIPTION'],
      r.map((e) => [e.id, e.model, e.status, armsText(e), e.control, when(e.createdAt), e.createdBy, e.description || '-']),
    ),
  );
}

function describe(e: ExperimentRecord): void {
  print(
    fields([
      { Id: e.id },
      { Model: e.model },
      { Description: e.description || '-' },
      { Status: statusText(e) },
      { Control: e.control },
      { Guardrails: guardrailsText(e) },
      { Created: `${when(e.createdAt)} by ${e.createdBy}` },
    ]),
  );
  print('\nArms:');
  print(armsTable(e.arms, e.control));
}

async function show(id: string, flags: ConnFlags): Promise<void> {
  const e = await call<ExperimentRecord>(flags, 'GET', `/api/v1/experiments/${enc(id)}`);
  if (flags.json) return printJson(e);
  describe(e);
}

interface CreateFlags extends ConnFlags {
  id?: string;
  description?: string;
  control?: string;
  maxErrorRate?: number;
  maxP99?: number;
  minRequests?: number;
  autoRollback?: boolean;
}

async function create(model: string, flags: CreateFlags): Promise<void> {
  const body: Record<string, unknown> = { model };
  if (flags.id !== undefined) body['id'] = flags.id;
  if (flags.description !== undefined) body['description'] = flags.description;
  if (flags.control !== undefined) body['control'] = flags.control;
  const g: Record<string, unknown> = {};
  if (flags.maxErrorRate !== undefined) g['maxErrorRate'] = flags.maxErrorRate;
  if (flags.maxP99 !== undefined) g['maxP99Ms'] = flags.maxP99;
  if (flags.minRequests !== undefined) g['minRequests'] = flags.minRequests;
  if (flags.autoRollback === false) g['autoRollback'] = false;
  if (Object.keys(g).length) body['guardrails'] = g;
  const e = await call<ExperimentRecord>(flags, 'POST', '/api/v1/experiments', { json: body });
  if (flags.json) return printJson(e);
  print(`Started experiment ${e.id} on ${e.model}: ${armsText(e)}; control ${e.control}.`);
  print(`Guardrails: ${guardrailsText(e)}.`);
}

async function stop(id: string, flags: ConnFlags & { reason?: string }): Promise<void> {
  const e = await call<ExperimentRecord>(flags, 'POST', `/api/v1/experiments/${enc(id)}/stop`, {
    json: flags.reason === undefined ? {} : { reason: flags.reason },
  });
  if (flags.json) return printJson(e);
  print(
    `Stopped experiment ${e.id} on ${e.model}${e.stoppedAt ? ` at ${when(e.stoppedAt)}` : ''}. The routing policy is unchanged (see "switchyard routing show ${e.model}").`,
  );
}

async function remove(id: string, flags: ConnFlags): Promise<void> {
  await call<null>(flags, 'DELETE', `/api/v1/experiments/${enc(id)}`);
  if (flags.json) return printJson({ id, deleted: true });
  print(`Deleted experiment ${id} and its data.`);
}

async function event(id: string, unit: string, metric: string, value: number | undefined, flags: ConnFlags & { at?: string }): Promise<void> {
  const body: EventIn = { unit, metric };
  if (value !== undefined) body.value = value;
  if (flags.at !== undefined) body.at = flags.at;
  const r = await call<{ accepted: number }>(flags, 'POST', `/api/v1/experiments/${enc(id)}/events`, { json: body });
  if (flags.json) return printJson(r);
  print(`Recorded ${metric}${value === undefined ? '' : `=${value}`} for unit ${unit} in experiment ${id} (accepted: ${r.accepted}).`);
}

/** Events from JSON Lines text: one {unit, metric, value?, at?} per line; blank lines are skipped. */
export function parseEvents(text: string, where: string): EventIn[] {
  const out: EventIn[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    const at = `${where} line ${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new CliError(`${at}: not valid JSON (${(e as Error).message})`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v))
      throw new CliError(`${at}: must be a JSON object {"unit": …, "metric": …, "value": …, "at": …}`);
    const o = v as Record<string, unknown>;
    const extra = Object.keys(o).filter((k) => !['unit', 'metric', 'value', 'at'].includes(k));
    if (extra.length)
      throw new CliError(`${at}: unknown field${extra.length > 1 ? 's' : ''} ${extra.map((k) => `"${k}"`).join(', ')} (allowed: unit, metric, value, at)`);
    if (typeof o['unit'] !== 'string' || o['unit'] === '') throw new CliError(`${at}: "unit" must be a non-empty string`);
    if (typeof o['metric'] !== 'string' || o['metric'] === '') throw new CliError(`${at}: "metric" must be a non-empty string`);
    const e: EventIn = { unit: o['unit'], metric: o['metric'] };
    if (o['value'] !== undefined) {
      if (typeof o['value'] !== 'number' || !Number.isFinite(o['value'])) throw new CliError(`${at}: "value" must be a number`);
      e.value = o['value'];
    }
    if (o['at'] !== undefined) {
      if (typeof o['at'] !== 'string' || Number.isNaN(Date.parse(o['at']))) throw new CliError(`${at}: "at" must be an ISO-8601 time`);
      e.at = o['at'];
    }
    out.push(e);
  }
  return out;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function events(id: string, flags: ConnFlags & { file: string }): Promise<void> {
  let text: string;
  try {
    text = flags.file === '-' ? await readStdin() : await readFile(flags.file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read ${flags.file}: ${(e as Error).message}`);
  }
  const list = parseEvents(text, flags.file === '-' ? 'standard input' : flags.file);
  if (list.length === 0)
    throw new CliError(
      `${flags.file === '-' ? 'standard input' : flags.file} holds no events (one JSON object per line: {"unit": …, "metric": …, "value": …})`,
    );
  let accepted = 0;
  let requests = 0;
  for (let i = 0; i < list.length; i += EVENTS_PER_CALL) {
    const chunk = list.slice(i, i + EVENTS_PER_CALL);
    try {
      const r = await call<{ accepted: number }>(flags, 'POST', `/api/v1/experiments/${enc(id)}/events`, { json: { events: chunk } });
      accepted += r.accepted;
      requests++;
    } catch (e) {
      if (!(e instanceof CliError) || i === 0) throw e;
      throw new CliError(`${e.message} (events ${i + 1}–${i + chunk.length}; the ${i} before were sent, ${accepted} accepted)`);
    }
  }
  if (flags.json) return printJson({ accepted, events: list.length, requests });
  print(
    `Sent ${list.length} event${list.length === 1 ? '' : 's'} to experiment ${id} in ${requests} request${requests === 1 ? '' : 's'}; accepted: ${accepted}.`,
  );
}

function metricTable(r: ReportJson, metric: string): string {
  const control = r.arms.find((a) => a.control);
  const comps = new Map(r.comparisons.filter((c) => c.metric === metric).map((c) => [c.arm, c]));
  // Mean columns only for value metrics: any mean test, or a per-unit mean other than 1 (plain conversions are all 1).
  const withMean =
    [...comps.values()].some((c) => c.mean !== null) ||
    r.arms.some((a) => {
      const m = a.metrics[metric];
      return m !== undefined && m.mean !== null && m.mean !== 1;
    });
  // One number of decimals for every mean in the table.
  const dp = decimalsFor([
    ...r.arms.map((a) => a.metrics[metric]?.mean ?? 0),
    ...[...comps.values()].flatMap((c) => (c.mean ? [c.mean.diff, c.mean.ciLow, c.mean.ciHigh] : [])),
  ]);
  const head = ['ARM', 'UNITS', 'RATE', 'Δ RATE', '95% CI', 'P'];
  if (withMean) head.push('MEAN', 'Δ MEAN', '95% CI', 'P');
  const rows = r.arms.map((a) => {
    const m = a.metrics[metric];
    const r = m?.conversionRate === null || m?.conversionRate === undefined ? '-' : rate(m.conversionRate);
    const row: string[] = [a.name + (a.control ? ' (control)' : ''), String(m?.units ?? 0), r];
    const c = comps.get(a.name);
    if (a.control || c === undefined) row.push('-', '-', '-');
    else if (c.conversion === null) row.push('n/a', '-', '-');
    else row.push(`${pp(c.conversion.diff)} pp`, `[${pp(c.conversion.ciLow)}, ${pp(c.conversion.ciHigh)}] pp`, pval(c.conversion.pValue));
    if (withMean) {
      row.push(m?.mean === null || m?.mean === undefined ? '-' : m.mean.toFixed(dp));
      if (a.control || c === undefined) row.push('-', '-', '-');
      else if (c.mean === null) row.push('n/a', '-', '-');
      else row.push(signed(c.mean.diff.toFixed(dp)), `[${signed(c.mean.ciLow.toFixed(dp))}, ${signed(c.mean.ciHigh.toFixed(dp))}]`, pval(c.mean.pValue));
    }
    return row;
  });
  const title = `Metric "${metric}"${control ? ` (vs control ${control.name})` : ''}:`;
  return `${title}\n${table(head, rows)}`;
}

function srmText(r: ReportJson): string {
  const s = r.srm;
  if (s === null) return 'Sample ratio check: not enough exposures yet.';
  const exposures = r.arms.reduce((n, a) => n + a.exposures, 0);
  const observed = r.arms.map((a) => `${a.name} ${exposures > 0 ? percent(a.exposures / exposures, 1) : '-'} (expected ${percent(a.weight, 1)})`).join(', ');
  const stat = `χ² = ${num(s.chiSquare)}, df = ${s.df}, p ${s.pValue === 0 ? '< 1e-16' : s.pValue < 0.0001 ? `= ${s.pValue.toExponential(2)}` : `= ${s.pValue.toFixed(4)}`}`;
  if (s.mismatch) {
    return `!! SAMPLE RATIO MISMATCH (${stat}): exposures ${observed} do not match the arm weights.\n!! The assignment is biased (or exposures are lost); do not trust the comparisons above.`;
  }
  return `Sample ratio: OK (${stat}); exposures ${observed}.`;
}

async function report(id: string, flags: ConnFlags): Promise<void> {
  const r = await call<ReportJson>(flags, 'GET', `/api/v1/experiments/${enc(id)}/report`);
  if (flags.json) return printJson(r);
  const e = r.experiment;
  print(`Experiment ${e.id} on ${e.model}: ${statusText(e)}${e.description ? ` — ${e.description}` : ''}`);
  print(`Report generated ${when(r.generatedAt)}.\n`);
  print('Arms:');
  print(
    table(
      ['ARM', 'TARGET', 'WEIGHT', 'EXPOSURES', 'REQUESTS (HASH)', 'REQUESTS (RANDOM)'],
      r.arms.map((a) => [a.name + (a.control ? ' (control)' : ''), a.target, percent(a.weight), a.exposures, a.requests.hash, a.requests.random]),
    ),
  );
  const metrics = [...new Set(r.arms.flatMap((a) => Object.keys(a.metrics)))].sort();
  if (metrics.length === 0) {
    print('\nNo outcome events yet (send them with "switchyard experiments event" or "events").');
  } else {
    for (const m of metrics) print(`\n${metricTable(r, m)}`);
    print('RATE = converting units / exposures; MEAN = per-unit sum over converting units; Δ vs the control; * p < 0.05.');
  }
  print(`\n${srmText(r)}`);
  if (r.unattributedEvents > 0) print(`Unattributed events (unit never exposed): ${r.unattributedEvents}.`);
  print(`\nGuardrails (${guardrailsText(e)}; this server's window):`);
  print(
    table(
      ['ARM', 'REQUESTS', 'ERRORS', 'ERROR RATE', 'P50', 'P99', 'BREACH'],
      r.guardrails.map((g) => [
        g.arm + (g.control ? ' (control)' : ''),
        g.window.requests,
        g.window.errors,
        g.window.errorRate === null ? '-' : percent(g.window.errorRate),
        ms(g.window.p50Ms),
        ms(g.window.p99Ms),
        g.breach ?? (g.control ? '-' : 'none'),
      ]),
    ),
  );
  if (r.shadows.length > 0) {
    print('\nShadows (this server):');
    print(shadowStatsTable(r.shadows));
  }
}

/** `switchyard experiments`: experiments on models' routing arms on a running server. */
export function experimentsCommand(): Command {
  const experiments = new Command('experiments').description(
    "Run experiments on a model's routing arms on a running Switchyard server: create, list, show, stop, delete, record outcome events, report.",
  );

  withConnection(
    experiments
      .command('list')
      .description('List experiments, newest first.')
      .option('--model <name>', 'only experiments on this model')
      .addOption(new Option('--status <status>', 'only experiments in this state').choices(['running', 'stopped', 'rolled_back'])),
  ).action(action(list));

  withConnection(
    experiments.command('show').description('Show an experiment: status, arms (weights in %), control and guardrails.').argument('<id>', 'experiment id'),
  ).action(action(show));

  withConnection(
    experiments
      .command('create')
      .description(
        'Start an experiment on a model\'s current routing arms (it needs at least 2; see "switchyard routing set"). Exposures are recorded from now on, by the sticky routing key.',
      )
      .argument('<model>', 'registered model name')
      .option('--id <id>', 'experiment id (default: generated, exp_…)')
      .option('-d, --description <text>', 'description')
      .option('--control <arm>', 'control arm name (default: the first arm)')
      .addOption(new Option('--max-error-rate <rate>', "guardrail: roll back when a non-control arm's error rate exceeds this (0..1 or 5%)").argParser(rateArg))
      .addOption(
        new Option('--max-p99 <duration>', "guardrail: roll back when a non-control arm's p99 latency exceeds this (a duration such as 250ms)").argParser(
          durationArg('--max-p99'),
        ),
      )
      .addOption(retiredOption('--max-p99-ms <ms>', '--max-p99 <duration> (e.g. --max-p99 250ms)'))
      .addOption(
        new Option('--min-requests <n>', 'guardrails judge an arm only with at least this many requests in the window (default: 100)').argParser(
          positiveInt('--min-requests'),
        ),
      )
      .option('--no-auto-rollback', 'on a guardrail breach only report it; do not roll traffic back to the control'),
  ).action(action(create));

  withConnection(
    experiments
      .command('stop')
      .description('Stop an experiment (the routing policy is unchanged).')
      .argument('<id>', 'experiment id')
      .option('--reason <text>', 'why (recorded with the experiment and in the event log)'),
  ).action(action(stop));

  withConnection(experiments.command('delete').description('Delete an experiment with its exposures and events.').argument('<id>', 'experiment id')).action(
    action(remove),
  );

  withConnection(
    experiments
      .command('event')
      .description('Record one outcome event for a unit (the routing key the request was assigned by, e.g. the user id).')
      .argument('<id>', 'experiment id')
      .argument('<unit>', 'routing key of the unit, e.g. the x-user-id value')
      .argument('<metric>', 'metric name, e.g. converted or revenue')
      .argument('[value]', 'value (default 1: a conversion); put -- before a negative value', numberArg)
      .addOption(new Option('--at <time>', 'when it happened, ISO-8601 (default: now)').argParser(isoArg)),
  ).action(action(event));

  withConnection(
    experiments
      .command('events')
      .description(
        `Record outcome events from a JSON Lines file: one {"unit", "metric", "value"?, "at"?} object per line, sent in batches of ${EVENTS_PER_CALL}; prints the total accepted.`,
      )
      .argument('<id>', 'experiment id')
      .requiredOption('-f, --file <path>', 'JSON Lines file of events ("-" = standard input)'),
  ).action(action(events));

  withConnection(
    experiments
      .command('report')
      .description(
        'Report: per arm exposures and requests; per metric each arm vs the control (rate or mean, difference, 95% CI, p-value); sample-ratio-mismatch check; guardrails; shadows.',
      )
      .argument('<id>', 'experiment id'),
  ).action(action(report));

  return experiments;
}
