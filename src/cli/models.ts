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
import { durationArg } from './args.js';
import { action, call, CliError, enc, fields, humanBytes, kv, print, printJson, table, when, withConnection, type ConnFlags } from './client.js';
import { countBytes, progress } from './progress.js';
import type { ModelRecord, RegistryEvent, VersionRecord } from '../registry/index.js';

const positiveInt =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${what} must be a positive integer`);
    return n;
  };

const collectPair =
  (what: string) =>
  (v: string, prev: string[] = []): string[] => {
    if (v.indexOf('=') <= 0) throw new InvalidArgumentError(`${what} must be key=value`);
    return [...prev, v];
  };

function isoArg(v: string): string {
  if (Number.isNaN(Date.parse(v))) throw new InvalidArgumentError('must be an ISO-8601 time, e.g. 2025-01-31T12:00:00Z');
  return v;
}

function aliasesFor(m: ModelRecord, version: number): string[] {
  return Object.entries(m.aliases)
    .filter(([, v]) => v === version)
    .map(([a]) => a)
    .sort();
}

function eventDetail(e: RegistryEvent): string {
  switch (e.type) {
    case 'alias_moved':
      return `${e.alias}: ${e.fromVersion ?? '-'} → ${e.toVersion ?? '-'}`;
    case 'alias_removed':
      return `${e.alias} (was ${e.fromVersion ?? '-'})`;
    case 'tag_set':
      return `${e.key}=${e.value}`;
    case 'tag_removed':
      return `${e.key}`;
    case 'version_status':
      return `${e.value ?? ''}`;
    default:
      return '';
  }
}

interface PushFlags extends ConnFlags {
  name: string;
  alias?: string;
  tag?: string[];
  metric?: string[];
  param?: string[];
  description?: string;
  sourceRun?: string;
  dataset?: string;
  codeRef?: string;
  /** false with --no-wait. */
  wait: boolean;
  /** How long to wait for the load, ms. */
  timeout: number;
}

type ServingEntry = { version: number; state: string; reason: string | null };
type ModelDetail = ModelRecord & { versions: VersionRecord[]; serving?: ServingEntry[] };

/** Poll interval while waiting for a pushed version to load. */
const WAIT_POLL_MS = 250;

/**
 * Wait until the server has loaded and warmed `version` (READY), or gave up on it (UNAVAILABLE: a CliError
 * with the server's reason). Returns a note for the user, or null when it is serving. A lazy model that
 * nothing routes to yet loads on its first request: nothing to wait for.
 */
async function waitLoaded(flags: PushFlags, model: string, version: number, aliased: boolean): Promise<string | null> {
  const deadline = Date.now() + flags.timeout;
  for (;;) {
    const m = await call<ModelDetail>(flags, 'GET', `/api/v1/models/${enc(model)}`);
    if (m.serving === undefined) return 'not waited for: this server reports no serving state';
    const s = m.serving.find((x) => x.version === version);
    if (s?.state === 'READY') return null;
    if (s?.state === 'UNAVAILABLE') {
      throw new CliError(
        `${model} version ${version} was registered but failed to load: ${s.reason ?? 'no reason given'} (it is not served; fix the model and push again, or archive it)`,
      );
    }
    if (m.loadPolicy === 'lazy' && !aliased && (s === undefined || s.state === 'UNLOADED')) return 'lazy model: it loads on its first request';
    if (Date.now() > deadline) {
      throw new CliError(
        `${model} version ${version} was registered but is still ${s?.state ?? 'not known to the server'} after ${flags.timeout / 1000} s (raise --timeout, or use --no-wait)`,
      );
    }
    await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
  }
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
  const bar = progress(`push ${basename(file)}`, size, 'bytes');
  const body = (Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>).pipeThrough(countBytes(bar));
  let v: VersionRecord & { alias?: string };
  try {
    v = await call<VersionRecord & { alias?: string }>(flags, 'POST', `/api/v1/models/${enc(flags.name)}/versions${qs ? `?${qs}` : ''}`, {
      body,
      headers: { 'content-type': 'application/octet-stream' },
    });
  } finally {
    bar.done();
  }
  const note = flags.wait ? await waitLoaded(flags, v.model, v.version, v.alias !== undefined) : 'not waited for (--no-wait)';
  if (flags.json) return printJson(v);
  print(`Registered ${v.model} version ${v.version} from ${basename(file)} (${humanBytes(size)}, sha256 ${v.artifact.sha256.slice(0, 12)})`);
  if (v.alias) print(`Alias ${v.alias} → ${v.version}`);
  print(note === null ? `Version ${v.version} is loaded and warmed up.` : `Load: ${note}.`);
}

async function list(flags: ConnFlags): Promise<void> {
  const r = await call<{ models: ModelRecord[] }>(flags, 'GET', '/api/v1/models');
  if (flags.json) return printJson(r);
  if (r.models.length === 0) return print('No registered models.');
  print(
    table(
      ['NAME', 'LATEST', 'ALIASES', 'OWNER', 'LOAD', 'PINNED', 'DESCRIPTION', 'UPDATED'],
      r.models.map((m) => [
        m.name,
        m.latestVersion,
        kv(m.aliases),
        m.owner || '-',
        m.loadPolicy,
        m.pinned ? 'yes' : 'no',
        m.description || '-',
        when(m.updatedAt),
      ]),
    ),
  );
}

async function show(name: string, flags: ConnFlags): Promise<void> {
  const m = await call<ModelRecord & { versions: VersionRecord[]; serving?: Record<string, unknown>[] }>(flags, 'GET', `/api/v1/models/${enc(name)}`);
  if (flags.json) return printJson(m);
  print(
    fields([
      { Name: m.name },
      { Description: m.description || '-' },
      { Owner: m.owner || '-' },
      { 'Load policy': m.loadPolicy },
      { Pinned: m.pinned ? 'yes' : 'no' },
      { Tags: kv(m.tags) },
      { 'Latest version': String(m.latestVersion) },
      { Created: when(m.createdAt) },
      { Updated: when(m.updatedAt) },
    ]),
  );
  const aliases = Object.entries(m.aliases).sort(([a], [b]) => a.localeCompare(b));
  print('\nAliases:');
  print(aliases.length ? table(['ALIAS', 'VERSION'], aliases) : '  (none)');
  print('\nVersions:');
  print(
    m.versions.length === 0
      ? '  (none)'
      : table(
          ['VERSION', 'STATUS', 'ALIASES', 'SHA256', 'SIZE', 'CREATED', 'BY', 'DESCRIPTION'],
          m.versions.map((v) => [
            v.version,
            v.archivedAt ? 'archived' : v.status + (v.statusReason ? ` (${v.statusReason})` : ''),
            aliasesFor(m, v.version).join(', ') || '-',
            v.artifact.sha256.slice(0, 12),
            humanBytes(v.artifact.size),
            when(v.createdAt),
            v.createdBy,
            v.description || '-',
          ]),
        ),
  );
  if (m.serving && m.serving.length > 0) {
    print('\nServing:');
    const keys = [...new Set(m.serving.flatMap((s) => Object.keys(s)))];
    print(
      table(
        keys.map((k) => k.toUpperCase()),
        m.serving.map((s) => keys.map((k) => (s[k] === undefined || s[k] === null ? '-' : typeof s[k] === 'object' ? JSON.stringify(s[k]) : String(s[k])))),
      ),
    );
  }
}

async function alias(name: string, aliasName: string, version: number, flags: ConnFlags): Promise<void> {
  const r = await call<{ alias: string; from: number | null; to: number }>(flags, 'PUT', `/api/v1/models/${enc(name)}/aliases/${enc(aliasName)}`, {
    json: { version },
  });
  if (flags.json) return printJson(r);
  print(`${name} alias ${r.alias}: ${r.from === null ? '(unset)' : `version ${r.from}`} → version ${r.to}`);
}

async function history(name: string, flags: ConnFlags & { at?: string; limit?: number }): Promise<void> {
  if (flags.at === undefined) {
    const r = await call<{ events: RegistryEvent[] }>(flags, 'GET', `/api/v1/models/${enc(name)}/events${flags.limit ? `?limit=${flags.limit}` : ''}`);
    if (flags.json) return printJson(r);
    if (r.events.length === 0) return print(`No events for ${name}.`);
    print(
      table(
        ['TIME', 'EVENT', 'VERSION', 'DETAIL', 'ACTOR'],
        r.events.map((e) => [when(e.at), e.type, e.version ?? '-', eventDetail(e) || '-', e.actor]),
      ),
    );
    return;
  }
  // Every alias the model has now or had at some point, and where each pointed at `at`.
  const model = await call<ModelRecord>(flags, 'GET', `/api/v1/models/${enc(name)}`);
  const ev = await call<{ events: RegistryEvent[] }>(flags, 'GET', `/api/v1/models/${enc(name)}/events?limit=10000`);
  const names = new Set(Object.keys(model.aliases));
  for (const e of ev.events) if (e.alias) names.add(e.alias);
  const rows: { alias: string; version: number | null; at: string }[] = [];
  for (const a of [...names].sort()) {
    rows.push(
      await call<{ alias: string; version: number | null; at: string }>(flags, 'GET', `/api/v1/models/${enc(name)}/aliases/${enc(a)}?at=${enc(flags.at)}`),
    );
  }
  if (flags.json) return printJson({ model: name, at: rows[0]?.at ?? flags.at, aliases: rows });
  if (rows.length === 0) return print(`${name} has never had an alias.`);
  print(`Aliases of ${name} at ${rows[0]?.at ?? flags.at}:`);
  print(
    table(
      ['ALIAS', 'VERSION'],
      rows.map((r) => [r.alias, r.version === null ? '(unset)' : r.version]),
    ),
  );
}

interface ModelFieldFlags extends ConnFlags {
  description?: string;
  owner?: string;
  loadPolicy?: 'preload' | 'lazy';
  pinned?: boolean;
  config?: Record<string, unknown>;
}

function modelFields(flags: ModelFieldFlags): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (flags.description !== undefined) body['description'] = flags.description;
  if (flags.owner !== undefined) body['owner'] = flags.owner;
  if (flags.loadPolicy !== undefined) body['loadPolicy'] = flags.loadPolicy;
  if (flags.pinned !== undefined) body['pinned'] = flags.pinned;
  if (flags.config !== undefined) body['config'] = flags.config;
  return body;
}

function describeModel(verb: string, m: ModelRecord): void {
  print(
    `${verb} model ${m.name} (load ${m.loadPolicy}${m.pinned ? ', pinned' : ''}${m.owner ? `, owner ${m.owner}` : ''}${m.description ? `: ${m.description}` : ''}).`,
  );
}

async function create(name: string, flags: ModelFieldFlags): Promise<void> {
  const m = await call<ModelRecord>(flags, 'POST', '/api/v1/models', { json: { name, ...modelFields(flags) } });
  if (flags.json) return printJson(m);
  describeModel('Registered', m);
}

async function update(name: string, flags: ModelFieldFlags): Promise<void> {
  const body = modelFields(flags);
  if (Object.keys(body).length === 0) throw new CliError('nothing to change: give --description, --owner, --load-policy, --pinned / --no-pinned or --config');
  const m = await call<ModelRecord>(flags, 'PATCH', `/api/v1/models/${enc(name)}`, { json: body });
  if (flags.json) return printJson(m);
  describeModel('Updated', m);
}

async function remove(name: string, flags: ConnFlags): Promise<void> {
  await call<null>(flags, 'DELETE', `/api/v1/models/${enc(name)}`);
  if (flags.json) return printJson({ model: name, deleted: true });
  print(`Deleted model ${name} and its versions.`);
}

async function unalias(name: string, aliasName: string, flags: ConnFlags): Promise<void> {
  const r = await call<unknown>(flags, 'DELETE', `/api/v1/models/${enc(name)}/aliases/${enc(aliasName)}`);
  if (flags.json) return printJson(r ?? { model: name, alias: aliasName, deleted: true });
  print(`${name} alias ${aliasName} removed.`);
}

const tagPath = (name: string, version: number | undefined, key: string): string =>
  `/api/v1/models/${enc(name)}${version === undefined ? '' : `/versions/${version}`}/tags/${enc(key)}`;

async function tag(name: string, pairs: string[], flags: ConnFlags & { version?: number }): Promise<void> {
  const out: unknown[] = [];
  for (const p of pairs) {
    const i = p.indexOf('=');
    if (i <= 0) throw new CliError(`tag "${p}" must be key=value`);
    out.push(await call<unknown>(flags, 'PUT', tagPath(name, flags.version, p.slice(0, i)), { json: { value: p.slice(i + 1) } }));
  }
  if (flags.json) return printJson(out.at(-1));
  print(`Tagged ${name}${flags.version === undefined ? '' : ` version ${flags.version}`}: ${pairs.join(', ')}.`);
}

async function untag(name: string, keys: string[], flags: ConnFlags & { version?: number }): Promise<void> {
  let last: unknown = null;
  for (const k of keys) last = await call<unknown>(flags, 'DELETE', tagPath(name, flags.version, k));
  if (flags.json) return printJson(last ?? { model: name, removed: keys });
  print(`Removed tag${keys.length === 1 ? '' : 's'} ${keys.join(', ')} from ${name}${flags.version === undefined ? '' : ` version ${flags.version}`}.`);
}

function configArg(v: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(v);
  } catch {
    throw new InvalidArgumentError('must be a JSON object, e.g. \'{"instances":2}\'');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new InvalidArgumentError('must be a JSON object, e.g. \'{"instances":2}\'');
  return parsed as Record<string, unknown>;
}

function withModelFields(cmd: Command): Command {
  return cmd
    .option('-d, --description <text>', 'description')
    .option('--owner <team>', 'owning team or person (free text)')
    .addOption(new Option('--load-policy <policy>', 'preload: load the newest version at once; lazy: on its first request').choices(['preload', 'lazy']))
    .option('--pinned', 'never evict its versions under the memory budget')
    .option('--no-pinned', 'may be evicted again')
    .addOption(new Option('--config <json>', 'serving config as a JSON object (instances, max_batch_size, …); replaces the stored one').argParser(configArg));
}

async function archive(name: string, version: number, flags: ConnFlags): Promise<void> {
  const v = await call<VersionRecord>(flags, 'POST', `/api/v1/models/${enc(name)}/versions/${version}/archive`);
  if (flags.json) return printJson(v);
  print(`Archived ${v.model} version ${v.version}${v.archivedAt ? ` at ${when(v.archivedAt)}` : ''}`);
}

/** `switchyard models`: manage the model registry of a running server. */
export function modelsCommand(): Command {
  const models = new Command('models').description(
    'Manage the model registry of a running Switchyard server (push, list, show, create, update, delete, alias, unalias, tag, untag, history, archive).',
  );

  withConnection(
    models
      .command('push')
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
      .option('--code-ref <ref>', 'lineage: the code revision (e.g. a git commit)')
      .option('--no-wait', 'return once the version is registered, without waiting for the server to load and warm it up')
      .addOption(
        new Option('--timeout <duration>', 'longest wait for the load and warmup (default: 10m)').argParser(durationArg('--timeout')).default(600_000, '10m'),
      ),
  ).action(action(push));

  withConnection(
    withModelFields(
      models
        .command('create')
        .description('Register a model without a version (push creates one with defaults; use this to set its load policy, owner or config first).')
        .argument('<name>', 'model name'),
    ),
  ).action(action(create));

  withConnection(
    withModelFields(
      models
        .command('update')
        .description("Change a model's description, owner, load policy, pinning or serving config.")
        .argument('<name>', 'registered model name'),
    ),
  ).action(action(update));

  withConnection(
    models
      .command('delete')
      .description('Delete a model and all its versions (refused while something depends on it, e.g. a running experiment).')
      .argument('<name>', 'registered model name'),
  ).action(action(remove));

  withConnection(
    models
      .command('unalias')
      .description('Remove an alias (requests naming it then fail with 404; the version stays).')
      .argument('<name>', 'registered model name')
      .argument('<alias>', 'alias name'),
  ).action(action(unalias));

  withConnection(
    models
      .command('tag')
      .description('Set tags on a model, or with --version on one of its versions.')
      .argument('<name>', 'registered model name')
      .argument('<key=value...>', 'tags to set')
      .addOption(new Option('--version <n>', 'tag this version instead of the model').argParser(positiveInt('--version'))),
  ).action(action(tag));

  withConnection(
    models
      .command('untag')
      .description('Remove tags from a model, or with --version from one of its versions.')
      .argument('<name>', 'registered model name')
      .argument('<key...>', 'tag keys to remove')
      .addOption(new Option('--version <n>', 'untag this version instead of the model').argParser(positiveInt('--version'))),
  ).action(action(untag));

  withConnection(models.command('list').description('List registered models with their latest version and aliases.')).action(action(list));

  withConnection(
    models
      .command('show')
      .description("Show a model's fields, aliases and versions (status, sha256 prefix, size, creation time).")
      .argument('<name>', 'registered model name'),
  ).action(action(show));

  withConnection(
    models
      .command('alias')
      .description('Point an alias at a version (creates or moves the alias).')
      .argument('<name>', 'registered model name')
      .argument('<alias>', 'alias name, e.g. production')
      .argument('<version>', 'version number', positiveInt('version')),
  ).action(action(alias));

  withConnection(
    models
      .command('history')
      .description("Show a model's event log, or with --at, which version each of its aliases pointed at at that time.")
      .argument('<name>', 'registered model name')
      .addOption(new Option('--at <time>', 'ISO-8601 time: show where every alias (current or past) pointed at then').argParser(isoArg))
      .addOption(new Option('--limit <n>', "at most this many events (default: the server's, 1000)").argParser(positiveInt('--limit'))),
  ).action(action(history));

  withConnection(
    models
      .command('archive')
      .description('Archive a version: it stays in the registry but is no longer listed or served (refused while an alias points at it).')
      .argument('<name>', 'registered model name')
      .argument('<version>', 'version number', positiveInt('version')),
  ).action(action(archive));

  return models;
}
