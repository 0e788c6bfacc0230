/**
 * @module
 * `switchyard models …`: the model registry from the command line, talking to a running server's admin API
 * (`/api/v1`) over HTTP. Human output is tables; `--json` prints the server's JSON. HTTP errors print
 * `switchyard: <status> <message>` on stderr and exit 1.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { Command, InvalidArgumentError, Option } from 'commander';
import { action, call, CliError, enc, fields, humanBytes, kv, print, printJson, table, when, withConnection, type ConnFlags } from './client.js';
import type { ModelRecord, RegistryEvent, VersionRecord } from '../registry/index.js';

const positiveInt = (what: string) => (v: string): number => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer`);
  return n;
};

const collectPair = (what: string) => (v: string, prev: string[] = []): string[] => {
  if (v.indexOf('=') <= 0) throw new InvalidArgumentError(`${what} must be key=value`);
  return [...prev, v];
};

function isoArg(v: string): string {
  if (Number.isNaN(Date.parse(v))) throw new InvalidArgumentError('must be an ISO-8601 time, e.g. 2025-01-31T12:00:00Z');
  return v;
}

function aliasesFor(m: ModelRecord, version: number): string[] {
  return Object.entries(m.aliases).filter(([, v]) => v === version).map(([a]) => a).sort();
}

function eventDetail(e: RegistryEvent): string {
  switch (e.type) {
    case 'alias_moved': return `${e.alias}: ${e.fromVersion ?? '-'} → ${e.toVersion ?? '-'}`;
    case 'alias_removed': return `${e.alias} (was ${e.fromVersion ?? '-'})`;
    case 'tag_set': return `${e.key}=${e.value}`;
    case 'tag_removed': return `${e.key}`;
    case 'version_status': return `${e.value ?? ''}`;
    default: return '';
  }
}

interface PushFlags extends ConnFlags {
  name: string; alias?: string; tag?: string[]; metric?: string[]; param?: string[];
  description?: string; sourceRun?: string; dataset?: string; codeRef?: string;
}

async function push(file: string, flags: PushFlags): Promise<void> {
  let size: number;
  try {
    const s = await stat(file);
    if (!s.isFile()) throw new Error('not a file');
    size = s.size;
  } catch (e) {
    throw new CliError(`cannot read ${file}: ${(e as Error).message}`);
  }
  const q = new URLSearchParams();
  if (flags.description !== undefined) q.append('description', flags.description);
  if (flags.alias !== undefined) q.append('alias', flags.alias);
  for (const t of flags.tag ?? []) q.append('tag', t);
  for (const m of flags.metric ?? []) q.append('metric', m);
  for (const p of flags.param ?? []) q.append('param', p);
  if (flags.sourceRun !== undefined) q.append('source_run', flags.sourceRun);
  if (flags.dataset !== undefined) q.append('dataset', flags.dataset);
  if (flags.codeRef !== undefined) q.append('code_ref', flags.codeRef);
  const qs = q.toString();
  const body = Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>;
  const v = await call<VersionRecord & { alias?: string }>(flags, 'POST', `/api/v1/models/${enc(flags.name)}/versions${qs ? `?${qs}` : ''}`, {
    body, headers: { 'content-type': 'application/octet-stream' },
  });
  if (flags.json) return printJson(v);
  print(`Registered ${v.model} version ${v.version} from ${basename(file)} (${humanBytes(size)}, sha256 ${v.artifact.sha256.slice(0, 12)})`);
  if (v.alias) print(`Alias ${v.alias} → ${v.version}`);
}

async function list(flags: ConnFlags): Promise<void> {
  const r = await call<{ models: ModelRecord[] }>(flags, 'GET', '/api/v1/models');
  if (flags.json) return printJson(r);
  if (r.models.length === 0) return print('No registered models.');
  print(table(['NAME', 'LATEST', 'ALIASES', 'OWNER', 'LOAD', 'PINNED', 'DESCRIPTION', 'UPDATED'], r.models.map((m) => [
    m.name, m.latestVersion, kv(m.aliases), m.owner || '-', m.loadPolicy, m.pinned ? 'yes' : 'no', m.description || '-', when(m.updatedAt),
  ])));
}

async function show(name: string, flags: ConnFlags): Promise<void> {
  const m = await call<ModelRecord & { versions: VersionRecord[]; serving?: Record<string, unknown>[] }>(flags, 'GET', `/api/v1/models/${enc(name)}`);
  if (flags.json) return printJson(m);
  print(fields([
    { Name: m.name }, { Description: m.description || '-' }, { Owner: m.owner || '-' }, { 'Load policy': m.loadPolicy },
    { Pinned: m.pinned ? 'yes' : 'no' }, { Tags: kv(m.tags) }, { 'Latest version': String(m.latestVersion) },
    { Created: when(m.createdAt) }, { Updated: when(m.updatedAt) },
  ]));
  const aliases = Object.entries(m.aliases).sort(([a], [b]) => a.localeCompare(b));
  print('\nAliases:');
  print(aliases.length ? table(['ALIAS', 'VERSION'], aliases) : '  (none)');
  print('\nVersions:');
  print(m.versions.length === 0 ? '  (none)' : table(['VERSION', 'STATUS', 'ALIASES', 'SHA256', 'SIZE', 'CREATED', 'BY', 'DESCRIPTION'], m.versions.map((v) => [
    v.version,
    v.archivedAt ? 'archived' : v.status + (v.statusReason ? ` (${v.statusReason})` : ''),
    aliasesFor(m, v.version).join(', ') || '-',
    v.artifact.sha256.slice(0, 12),
    humanBytes(v.artifact.size),
    when(v.createdAt),
    v.createdBy,
    v.description || '-',
  ])));
  if (m.serving && m.serving.length > 0) {
    print('\nServing:');
    const keys = [...new Set(m.serving.flatMap((s) => Object.keys(s)))];
    print(table(keys.map((k) => k.toUpperCase()), m.serving.map((s) => keys.map((k) => (s[k] === undefined || s[k] === null ? '-' : typeof s[k] === 'object' ? JSON.stringify(s[k]) : String(s[k]))))));
  }
}

async function alias(name: string, aliasName: string, version: number, flags: ConnFlags): Promise<void> {
  const r = await call<{ alias: string; from: number | null; to: number }>(flags, 'PUT', `/api/v1/models/${enc(name)}/aliases/${enc(aliasName)}`, { json: { version } });
  if (flags.json) return printJson(r);
  print(`${name} alias ${r.alias}: ${r.from === null ? '(unset)' : `version ${r.from}`} → version ${r.to}`);
}

async function history(name: string, flags: ConnFlags & { at?: string; limit?: number }): Promise<void> {
  if (flags.at === undefined) {
    const r = await call<{ events: RegistryEvent[] }>(flags, 'GET', `/api/v1/models/${enc(name)}/events${flags.limit ? `?limit=${flags.limit}` : ''}`);
    if (flags.json) return printJson(r);
    if (r.events.length === 0) return print(`No events for ${name}.`);
    print(table(['TIME', 'EVENT', 'VERSION', 'DETAIL', 'ACTOR'], r.events.map((e) => [when(e.at), e.type, e.version ?? '-', eventDetail(e) || '-', e.actor])));
    return;
  }
  // Every alias the model has now or had at some point, and where each pointed at `at`.
  const model = await call<ModelRecord>(flags, 'GET', `/api/v1/models/${enc(name)}`);
  const ev = await call<{ events: RegistryEvent[] }>(flags, 'GET', `/api/v1/models/${enc(name)}/events?limit=10000`);
  const names = new Set(Object.keys(model.aliases));
  for (const e of ev.events) if (e.alias) names.add(e.alias);
  const rows: { alias: string; version: number | null; at: string }[] = [];
  for (const a of [...names].sort()) {
    rows.push(await call<{ alias: string; version: number | null; at: string }>(flags, 'GET', `/api/v1/models/${enc(name)}/aliases/${enc(a)}?at=${enc(flags.at)}`));
  }
  if (flags.json) return printJson({ model: name, at: rows[0]?.at ?? flags.at, aliases: rows });
  if (rows.length === 0) return print(`${name} has never had an alias.`);
  print(`Aliases of ${name} at ${rows[0]?.at ?? flags.at}:`);
  print(table(['ALIAS', 'VERSION'], rows.map((r) => [r.alias, r.version === null ? '(unset)' : r.version])));
}

async function archive(name: string, version: number, flags: ConnFlags): Promise<void> {
  const v = await call<VersionRecord>(flags, 'POST', `/api/v1/models/${enc(name)}/versions/${version}/archive`);
  if (flags.json) return printJson(v);
  print(`Archived ${v.model} version ${v.version}${v.archivedAt ? ` at ${when(v.archivedAt)}` : ''}`);
}

/** `switchyard models`: manage the model registry of a running server. */
export function modelsCommand(): Command {
  const models = new Command('models')
    .description('Manage the model registry of a running Switchyard server (push, list, show, alias, history, archive).');

  withConnection(models.command('push')
    .description('Upload an ONNX file as a new version of a registered model (the model is created if needed); the file is streamed.')
    .argument('<file>', 'path of the ONNX model file')
    .requiredOption('-n, --name <model>', 'registered model name')
    .option('-a, --alias <alias>', 'point this alias (e.g. production) at the new version')
    .option('-t, --tag <key=value>', 'version tag (repeatable)', collectPair('--tag'))
    .option('--metric <key=number>', 'evaluation metric (repeatable)', collectPair('--metric'))
    .option('--param <key=value>', 'training parameter (repeatable)', collectPair('--param'))
    .option('-d, --description <text>', 'version description')
    .option('--source-run <id>', 'lineage: the training run that produced the model')
    .option('--dataset <ref>', 'lineage: the dataset it was trained on')
    .option('--code-ref <ref>', 'lineage: the code revision (e.g. a git commit)'))
    .action(action(push));

  withConnection(models.command('list')
    .description('List registered models with their latest version and aliases.'))
    .action(action(list));

  withConnection(models.command('show')
    .description("Show a model's fields, aliases and versions (status, sha256 prefix, size, creation time).")
    .argument('<name>', 'registered model name'))
    .action(action(show));

  withConnection(models.command('alias')
    .description('Point an alias at a version (creates or moves the alias).')
    .argument('<name>', 'registered model name')
    .argument('<alias>', 'alias name, e.g. production')
    .argument('<version>', 'version number', positiveInt('version')))
    .action(action(alias));

  withConnection(models.command('history')
    .description("Show a model's event log, or with --at, which version each of its aliases pointed at at that time.")
    .argument('<name>', 'registered model name')
    .addOption(new Option('--at <time>', 'ISO-8601 time: show where every alias (current or past) pointed at then').argParser(isoArg))
    .addOption(new Option('--limit <n>', 'at most this many events (default: the server\'s, 1000)').argParser(positiveInt('--limit'))))
    .action(action(history));

  withConnection(models.command('archive')
    .description('Archive a version: it stays in the registry but is no longer listed or served (refused while an alias points at it).')
    .argument('<name>', 'registered model name')
    .argument('<version>', 'version number', positiveInt('version')))
    .action(action(archive));

  return models;
}
