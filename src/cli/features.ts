/**
 * @module
 * `switchyard features …`: the feature store through a running server. Definitions (entities, feature views,
 * windowed views, feature services): list, show (with the revision history), apply a file of definitions
 * (JSON or YAML, entities then views then services), delete. Data: push rows from JSON Lines or CSV (in
 * requests of 1000 rows), read online values for entities, and export a point-in-time training set for an
 * entity file as CSV or JSON Lines.
 */
import { writeFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import type { DefinitionKind, DefinitionRecord, EntityDef, FeatureRead, FeatureServiceDef, ValueType, ViewDef } from '../features/index.js';
import { outputOption, retiredOption } from './args.js';
import { action, call, CliError, enc, fields, kv, print, printJson, request, table, when, withConnection, type ConnFlags } from './client.js';
import {
  chunk,
  chunkPushId,
  entityArg,
  featuresArg,
  formatOf,
  kindArg,
  KINDS,
  parseApplyFile,
  parseCsv,
  parseJsonl,
  readText,
  toCsv,
  toJsonl,
  typedRows,
  type KindPlural,
  type RowFormat,
} from './feature-files.js';
import { countBytes, progress } from './progress.js';

export {
  chunk,
  chunkPushId,
  entityArg,
  featuresArg,
  kindArg,
  parseApplyFile,
  parseCsv,
  parseJsonl,
  toCsv,
  typedRows,
  type ApplyPlan,
  type ColumnTypes,
  type CsvRow,
  type KindPlural,
  type RowFormat,
} from './feature-files.js';

/** Rows per push request. */
export const PUSH_CHUNK = 1000;

type Json = Record<string, unknown>;
type AnyDef = EntityDef | ViewDef | FeatureServiceDef;
type DefRecord = DefinitionRecord<AnyDef> & { change?: 'created' | 'updated' | 'unchanged'; deleted?: boolean };

const defPath = (plural: KindPlural, name?: string): string => `/api/v1/features/${plural}${name === undefined ? '' : `/${enc(name)}`}`;

// ---- definitions ----

const describeKeys = (e: EntityDef): string => e.joinKeys.map((k) => `${k.name}:${k.type}`).join(', ');
const ttlText = (s: number): string => (s === 0 ? 'none' : `${s} s`);
const binding = (s: FeatureServiceDef): string =>
  s.model === undefined ? '-' : `${s.model}${s.version === undefined ? ' (every version)' : ` v${s.version}`}`;
const valueText = (v: unknown): string => (v === null || v === undefined ? '-' : typeof v === 'string' ? v : JSON.stringify(v));

async function list(plural: KindPlural, flags: ConnFlags): Promise<void> {
  const r = await call<DefRecord[]>(flags, 'GET', defPath(plural));
  if (flags.json) return printJson(r);
  if (r.length === 0) return print(`No ${KINDS[plural].text === 'entity' ? 'entities' : `${KINDS[plural].text}s`}.`);
  const updated = (d: DefRecord): string => `${when(d.createdAt)} by ${d.createdBy}`;
  if (plural === 'entities') {
    print(
      table(
        ['NAME', 'JOIN KEYS', 'REVISION', 'UPDATED', 'DESCRIPTION'],
        r.map((d) => {
          const e = d.spec as EntityDef;
          return [d.name, describeKeys(e), d.revision, updated(d), e.description || '-'];
        }),
      ),
    );
  } else if (plural === 'views') {
    print(
      table(
        ['NAME', 'KIND', 'ENTITIES', 'FEATURES', 'MAX AGE', 'ONLINE', 'OFFLINE', 'REVISION', 'UPDATED'],
        r.map((d) => {
          const v = d.spec as ViewDef;
          return v.kind === 'window'
            ? [
                d.name,
                `window${v.source ? ` (${v.source.type})` : ''}`,
                v.entities.join(', '),
                v.aggregations.map((a) => a.name).join(', '),
                '-',
                'yes',
                'no',
                d.revision,
                updated(d),
              ]
            : [
                d.name,
                'view',
                v.entities.join(', '),
                v.features.map((f) => f.name).join(', '),
                ttlText(v.ttlSeconds),
                v.online ? 'yes' : 'no',
                v.offline ? 'yes' : 'no',
                d.revision,
                updated(d),
              ];
        }),
      ),
    );
  } else {
    print(
      table(
        ['NAME', 'FEATURES', 'MODEL', 'ON MISSING', 'REVISION', 'UPDATED', 'DESCRIPTION'],
        r.map((d) => {
          const s = d.spec as FeatureServiceDef;
          return [d.name, s.features.length, binding(s), s.onMissing, d.revision, updated(d), s.description || '-'];
        }),
      ),
    );
  }
}

function describe(d: DefRecord): void {
  const head = [{ Name: d.name }];
  const rev = { Revision: `${d.revision} (${when(d.createdAt)} by ${d.createdBy})` };
  if (d.kind === 'entity') {
    const e = d.spec as EntityDef;
    print(fields([...head, { Description: e.description || '-' }, { 'Join keys': describeKeys(e) }, rev]));
    return;
  }
  if (d.kind === 'view') {
    const v = d.spec as ViewDef;
    if (v.kind === 'window') {
      const src =
        v.source === undefined
          ? 'none (events are pushed)'
          : v.source.type === 'nats'
            ? `NATS stream ${v.source.stream}, subject ${v.source.subject}, durable ${v.source.durable}`
            : `Redis stream ${v.source.stream}, group ${v.source.group}`;
      print(
        fields([
          ...head,
          { Kind: 'window (sliding-window aggregations)' },
          { Description: v.description || '-' },
          { Entities: v.entities.join(', ') },
          { Source: src },
          rev,
        ]),
      );
      print('\nAggregations:');
      print(
        table(
          ['NAME', 'FN', 'FIELD', 'WINDOW'],
          v.aggregations.map((a) => [a.name, a.fn, a.field ?? '-', a.window]),
        ),
      );
    } else {
      print(
        fields([
          ...head,
          { Kind: 'view (pushed rows)' },
          { Description: v.description || '-' },
          { Entities: v.entities.join(', ') },
          { 'Max age': ttlText(v.ttlSeconds) },
          { Online: v.online ? 'yes' : 'no' },
          { Offline: v.offline ? 'yes' : 'no' },
          rev,
        ]),
      );
      print('\nFeatures:');
      print(
        table(
          ['NAME', 'TYPE', 'DESCRIPTION'],
          v.features.map((f) => [f.name, f.type, f.description || '-']),
        ),
      );
    }
    return;
  }
  const s = d.spec as FeatureServiceDef;
  print(
    fields([
      ...head,
      { Description: s.description || '-' },
      { Model: binding(s) },
      { 'On missing': s.onMissing === 'error' ? 'error (400)' : 'zero' },
      { 'Stale is missing': s.staleIsMissing ? 'yes' : 'no' },
      rev,
    ]),
  );
  print('\nFeatures (in order):');
  print(
    table(
      ['#', 'FEATURE', 'INPUT', 'DEFAULT'],
      s.features.map((f, i) => [i + 1, f.ref, f.input ?? '-', f.default === undefined ? '-' : JSON.stringify(f.default)]),
    ),
  );
}

/** What each revision did: created (first, or after a delete), updated, deleted. */
export function historyChanges(h: readonly { deleted?: boolean }[]): string[] {
  return h.map((r, i) => (r.deleted ? 'deleted' : i === 0 || h[i - 1]!.deleted ? 'created' : 'updated'));
}

async function show(plural: KindPlural, name: string, flags: ConnFlags & { history?: boolean }): Promise<void> {
  if (flags.history) {
    const h = await call<DefRecord[]>(flags, 'GET', `${defPath(plural, name)}/history`);
    if (flags.json) return printJson(h);
    const changes = historyChanges(h);
    print(`History of ${KINDS[plural].text} ${name}:`);
    print(
      table(
        ['REVISION', 'WHEN', 'BY', 'CHANGE'],
        h.map((r, i) => [r.revision, when(r.createdAt), r.createdBy, changes[i]!]),
      ),
    );
    return;
  }
  const d = await call<DefRecord>(flags, 'GET', defPath(plural, name));
  if (flags.json) return printJson(d);
  describe(d);
}

async function apply(file: string, flags: ConnFlags): Promise<void> {
  const plan = parseApplyFile(await readText(file), file === '-' ? 'standard input' : file);
  const done: { kind: DefinitionKind; name: string; change: string; revision: number }[] = [];
  for (const plural of Object.keys(KINDS) as KindPlural[]) {
    for (const def of plan[plural]) {
      const { name, ...body } = def as Json & { name: string };
      let r: DefRecord;
      try {
        r = await call<DefRecord>(flags, 'PUT', defPath(plural, name), { json: body });
      } catch (e) {
        if (!(e instanceof CliError)) throw e;
        const applied = done.length ? ` (${done.length} applied before it)` : '';
        throw new CliError(`${KINDS[plural].text} ${name}: ${e.message}${applied}`);
      }
      const change = r.change ?? 'applied';
      done.push({ kind: KINDS[plural].kind, name, change, revision: r.revision });
      if (!flags.json) print(`${KINDS[plural].text} ${name}: ${change} (revision ${r.revision})`);
    }
  }
  if (flags.json) return printJson(done);
  const count = (c: string): number => done.filter((d) => d.change === c).length;
  print(`${count('created')} created, ${count('updated')} updated, ${count('unchanged')} unchanged.`);
}

async function remove(plural: KindPlural, name: string, flags: ConnFlags): Promise<void> {
  await call<null>(flags, 'DELETE', defPath(plural, name));
  if (flags.json) return printJson({ kind: KINDS[plural].kind, name, deleted: true });
  print(`Deleted ${KINDS[plural].text} ${name} (its history is kept; see "switchyard features ${plural} show ${name} --history").`);
}

// ---- data ----

/** Column types of a view's rows: its join keys (as text) and its features or aggregated fields. */
async function columnTypes(flags: ConnFlags, view: string): Promise<{ types: Map<string, ValueType>; joinKeys: Set<string> }> {
  const v = (await call<DefRecord>(flags, 'GET', defPath('views', view))).spec as ViewDef;
  const types = new Map<string, ValueType>();
  if (v.kind === 'view') for (const f of v.features) types.set(f.name, f.type);
  else for (const a of v.aggregations) if (a.field !== undefined) types.set(a.field, 'float64');
  const joinKeys = new Set<string>();
  for (const e of v.entities) {
    const ent = (await call<DefRecord>(flags, 'GET', defPath('entities', e))).spec as EntityDef;
    for (const k of ent.joinKeys) joinKeys.add(k.name);
  }
  return { types, joinKeys };
}

interface PushFlags extends ConnFlags {
  file: string;
  id?: string;
  format?: RowFormat;
}

async function push(view: string, flags: PushFlags): Promise<void> {
  const where = flags.file === '-' ? 'standard input' : flags.file;
  const format = flags.format ?? formatOf(flags.file);
  if (format === undefined) throw new CliError(`cannot tell the format of ${where}: use a .csv or .jsonl file, or --format`);
  const text = await readText(flags.file);
  let rows: Json[];
  if (format === 'csv') {
    const csv = parseCsv(text, where);
    const { types, joinKeys } = await columnTypes(flags, view);
    rows = typedRows(csv, types, where, joinKeys);
  } else rows = parseJsonl(text, where);
  if (rows.length === 0) throw new CliError(`${where} holds no rows`);
  const chunks = chunk(rows, PUSH_CHUNK);
  const totals: Record<string, number> = {};
  const bar = progress(`push ${view}`, rows.length, 'rows');
  try {
    await pushChunks(view, flags, chunks, totals, bar);
  } finally {
    bar.done();
  }
  if (flags.json) return printJson({ view, rows: rows.length, requests: chunks.length, ...totals });
  const detail = Object.keys(totals).length ? `: ${kv(totals)}` : '';
  print(`Pushed ${rows.length} row${rows.length === 1 ? '' : 's'} to ${view} in ${chunks.length} request${chunks.length === 1 ? '' : 's'}${detail}.`);
}

async function pushChunks(view: string, flags: PushFlags, chunks: Json[][], totals: Record<string, number>, bar: { add(n: number): void }): Promise<void> {
  for (let n = 0; n < chunks.length; n++) {
    const body: Json = { view, rows: chunks[n] };
    if (flags.id !== undefined) body['pushId'] = chunkPushId(flags.id, n, chunks.length);
    let r: Json;
    try {
      r = await call<Json>(flags, 'POST', '/api/v1/features/push', { json: body });
    } catch (e) {
      if (!(e instanceof CliError) || n === 0) throw e;
      throw new CliError(`${e.message} (rows ${n * PUSH_CHUNK + 1}–${n * PUSH_CHUNK + chunks[n]!.length}; the ${n * PUSH_CHUNK} before were pushed)`);
    }
    for (const [k, v] of Object.entries(r ?? {})) if (typeof v === 'number' && k !== 'rows') totals[k] = (totals[k] ?? 0) + v;
    bar.add(chunks[n]!.length);
  }
}

interface OnlineResult {
  entity: Json;
  features: Record<string, FeatureRead>;
}

/** Online results as table rows: one per (entity, feature). */
export function onlineRows(results: readonly OnlineResult[]): string[][] {
  return results.flatMap((r) =>
    Object.entries(r.features).map(([ref, f]) => [kv(r.entity), ref, valueText(f.value), f.status, f.eventTime === null ? '-' : when(f.eventTime)]),
  );
}

interface GetFlags extends ConnFlags {
  entity: Json[];
  features?: string[];
  service?: string;
}

async function get(flags: GetFlags): Promise<void> {
  if ((flags.features === undefined) === (flags.service === undefined)) throw new CliError('give either --features view:feature,… or --service <name>');
  const body: Json = { entities: flags.entity };
  if (flags.features !== undefined) body['features'] = flags.features;
  if (flags.service !== undefined) body['service'] = flags.service;
  const r = await call<{ results: OnlineResult[] }>(flags, 'POST', '/api/v1/features/online', { json: body });
  if (flags.json) return printJson(r);
  print(table(['ENTITY', 'FEATURE', 'VALUE', 'STATUS', 'EVENT TIME'], onlineRows(r.results)));
}

interface ExportFlags extends ConnFlags {
  entities: string;
  features?: string[];
  service?: string;
  output?: string;
  format?: RowFormat;
}

async function exportSet(flags: ExportFlags): Promise<void> {
  if ((flags.features === undefined) === (flags.service === undefined)) throw new CliError('give either --features view:feature,… or --service <name>');
  const where = flags.entities === '-' ? 'standard input' : flags.entities;
  const inFormat = formatOf(flags.entities) ?? 'csv';
  const text = await readText(flags.entities);
  // Join keys travel as text (int64 keys as integer strings); an epoch-ms timestamp as a number.
  const entities = inFormat === 'csv' ? typedRows(parseCsv(text, where), new Map(), where) : parseJsonl(text, where);
  if (entities.length === 0) throw new CliError(`${where} holds no entity rows`);
  const body: Json = { entities };
  if (flags.features !== undefined) body['features'] = flags.features;
  if (flags.service !== undefined) body['service'] = flags.service;
  const res = await request(flags, 'POST', '/api/v1/features/export', { json: body });
  const length = Number(res.headers.get('content-length') ?? NaN);
  const bar = progress('export', Number.isFinite(length) ? length : null, 'bytes');
  let r: { rows: Json[] };
  try {
    r = JSON.parse(await new Response(res.body?.pipeThrough(countBytes(bar)) ?? null).text()) as { rows: Json[] };
  } finally {
    bar.done();
  }
  const format = flags.format ?? (flags.output === undefined ? 'csv' : (formatOf(flags.output) ?? 'csv'));
  const out = format === 'csv' ? toCsv(r.rows) : toJsonl(r.rows);
  if (flags.output === undefined) {
    process.stdout.write(out);
    return;
  }
  try {
    await writeFile(flags.output, out);
  } catch (e) {
    throw new CliError(`cannot write ${flags.output}: ${(e as Error).message}`);
  }
  print(`Wrote ${r.rows.length} row${r.rows.length === 1 ? '' : 's'} to ${flags.output} (${format}).`);
}

// ---- commands ----

/** `switchyard features`: feature store definitions and data on a running server. */
export function featuresCommand(): Command {
  const features = new Command('features').description(
    'The feature store on a running Switchyard server: entities, feature views, windowed views and feature services (list, show, apply, delete; versioned), push rows, read online values, export point-in-time training sets.',
  );

  for (const plural of Object.keys(KINDS) as KindPlural[]) {
    const { text } = KINDS[plural];
    const many = plural === 'entities' ? 'entities' : `${text}s${plural === 'views' ? ' and windowed views' : ''}`;
    const c = features.command(plural).description(`List ${many} ("list", the default) or show one ("show <name> [--history]").`);
    withConnection(c.command('list', { isDefault: true }).description(`List current ${many}, by name.`)).action(
      action((flags: ConnFlags) => list(plural, flags)),
    );
    withConnection(
      c
        .command('show')
        .description(
          `Show ${plural === 'entities' ? 'an' : 'a'} ${text}${plural === 'services' ? ' (its features in order, inputs and defaults)' : ''}; --history lists every revision.`,
        )
        .argument('<name>', `${text} name`)
        .option('--history', 'every revision, oldest first (who, when, created/updated/deleted)'),
    ).action(action((name: string, flags: ConnFlags & { history?: boolean }) => show(plural, name, flags)));
  }

  withConnection(
    features
      .command('apply')
      .description(
        'Create or update definitions from a file (JSON, or YAML unless named .json): {entities: [...], views: [...], services: [...]}, each with a name; applied in that order (platform admin key). Prints created / updated / unchanged per definition.',
      )
      .argument('<file>', 'definitions file ("-" = standard input, read as YAML)'),
  ).action(action(apply));

  withConnection(
    features
      .command('delete')
      .description('Delete a definition (refused while a view uses the entity, or a service the view; the history is kept).')
      .argument('<kind>', 'entity, view or service', kindArg)
      .argument('<name>', 'definition name'),
  ).action(action(remove));

  withConnection(
    features
      .command('push')
      .description(
        `Push rows into a view from JSON Lines or CSV, ${PUSH_CHUNK} rows per request. Feature views: join keys, event_time (ISO-8601 or epoch ms) and feature values per row; windowed views: join keys, event_id, event_time and the aggregated fields. CSV cells are typed by the view's definition.`,
      )
      .argument('<view>', 'feature view or windowed view')
      .requiredOption('-f, --file <path>', 'rows: .jsonl/.ndjson (one JSON object per line) or .csv (header row); "-" = standard input with --format')
      .addOption(new Option('--format <format>', 'file format (default: from the file name)').choices(['csv', 'jsonl']))
      .option(
        '--id <pushId>',
        'a label for the push, echoed by the server (with several requests: <id>-1, <id>-2, …); retries are safe without it: rows are idempotent by entity and event time',
      ),
  ).action(action(push));

  withConnection(
    features
      .command('get')
      .description('Read online feature values (value, status PRESENT / NOT_FOUND / OUTSIDE_MAX_AGE, event time) for entities.')
      .requiredOption('-e, --entity <key=value>', 'an entity by its join keys (repeatable; a composite key as k1=v1,k2=v2)', entityArg)
      .addOption(new Option('--features <refs>', 'comma-separated view:feature references').argParser(featuresArg).conflicts('service'))
      .option('--service <name>', "a feature service's features"),
  ).action(action(get));

  withConnection(
    features
      .command('export')
      .description('Export a point-in-time-correct training set: for each entity row (join keys + timestamp), each feature as known at that time.')
      .requiredOption('--entities <file>', 'entity rows: .csv (header: join keys, timestamp) or .jsonl; timestamp ISO-8601 or epoch ms')
      .addOption(new Option('--features <refs>', 'comma-separated view:feature references').argParser(featuresArg).conflicts('service'))
      .option('--service <name>', "a feature service's features")
      .addOption(outputOption('the training set'))
      .addOption(retiredOption('--out <file>', '-o, --output <file>'))
      .addOption(new Option('--format <format>', 'output format (default: from --output, else csv)').choices(['csv', 'jsonl'])),
  ).action(action(exportSet));

  return features;
}
