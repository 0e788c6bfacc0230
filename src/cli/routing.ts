/**
 * @module
 * `switchyard routing …`: a model's traffic policy (weighted arms, sticky routing key, shadows, fallback chain,
 * timeout, circuit breaker, result cache) through a running server's admin API. `set` takes a whole policy as
 * JSON (--file, --policy) or builds one from flags (--arm, --sticky, --shadow, --fallback, …); `canary` moves
 * the split between a control and a canary (the 5% → 50% → 100% ramp) and keeps the rest of the policy.
 */
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { durationArg, retiredOption } from './args.js';
import type { RoutingPolicy, RoutingPolicyInput } from '../registry/index.js';
import { action, call, CliError, enc, fields, print, printJson, table, withConnection, type ConnFlags } from './client.js';

/** GET/PUT /api/v1/models/:name/routing. */
export interface RoutingState {
  model: string;
  revision: number;
  policy: RoutingPolicy | null;
  circuits: Array<{ version: string; state: string }>;
  shadows: ShadowStatsRow[];
}

export interface ShadowStatsRow {
  target: string;
  copies: number;
  ok: number;
  errors: number;
  timeouts: number;
  dropped: number;
  meanMaxAbsDiff: number | null;
  maxAbsDiff: number | null;
  agreement: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  mismatches: number;
}

type ArmIn = { name: string; target: string; weight: number };
type ShadowIn = { target: string; fraction: number; timeoutMs?: number };
type FallbackIn = { model?: string; version?: string };

// ---- formatting (shared with experiments.ts) ----

/** A share 0..1 as a percentage with at most `digits` decimals: 0.05 → "5%", 1/3 → "33.33%". */
export function percent(share: number, digits = 2): string {
  return `${Number((share * 100).toFixed(digits))}%`;
}

/** A number with about 4 significant digits, without trailing zeros. */
export function num(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '-';
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1000) return x.toFixed(1).replace(/\.0$/, '');
  if (a < 1e-4) return x.toExponential(2);
  return String(Number(x.toPrecision(4)));
}

export const ms = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : `${num(x)} ms`);

/** Arms with their normalised weight as a percentage. */
export function armsTable(arms: ReadonlyArray<{ name: string; target: string; weight: number }>, control?: string): string {
  const total = arms.reduce((s, a) => s + a.weight, 0);
  return table(
    ['ARM', 'TARGET', 'WEIGHT'],
    arms.map((a) => [a.name + (a.name === control ? ' (control)' : ''), a.target, total > 0 ? percent(a.weight / total) : '0%']),
  );
}

/** Running statistics of shadow targets on the server that answered. */
export function shadowStatsTable(rows: readonly ShadowStatsRow[]): string {
  return table(
    ['TARGET', 'COPIES', 'OK', 'ERRORS', 'TIMEOUTS', 'DROPPED', 'AGREEMENT', 'MEAN MAX|DIFF|', 'MAX |DIFF|', 'P50', 'P99', 'MISMATCHES'],
    rows.map((s) => [
      s.target,
      s.copies,
      s.ok,
      s.errors,
      s.timeouts,
      s.dropped,
      s.agreement === null ? '-' : percent(s.agreement),
      num(s.meanMaxAbsDiff),
      num(s.maxAbsDiff),
      ms(s.p50Ms),
      ms(s.p99Ms),
      s.mismatches,
    ]),
  );
}

function fallbackText(f: { model?: string | undefined; version?: string | undefined }): string {
  if (f.model === undefined) return f.version ?? '(default route)';
  return f.version === undefined ? `${f.model} (default route)` : `${f.model}:${f.version}`;
}

function describePolicy(r: RoutingState): void {
  const p = r.policy;
  if (p === null) {
    print(fields([{ Model: r.model }, { Revision: String(r.revision) }, { Policy: 'none: requests take the default route' }]));
  } else {
    const sticky = p.sticky;
    const cb = p.circuitBreaker;
    print(
      fields([
        { Model: r.model },
        { Revision: String(r.revision) },
        { 'Sticky key': sticky ? sticky.key : 'none (random split per request)' },
        ...(sticky
          ? [
              { Seed: sticky.seed ?? `${r.model} (the model name)` },
              { 'Hash version': String(sticky.hashVersion) },
              { Coverage: percent(sticky.coverage) },
              ...(sticky.namespace ? [{ Namespace: `${sticky.namespace[0]} [${sticky.namespace[1]}, ${sticky.namespace[2]})` }] : []),
            ]
          : []),
        { Fallback: p.fallback?.length ? p.fallback.map(fallbackText).join(' → ') : 'none' },
        { Timeout: p.timeoutMs === undefined ? 'none' : `${p.timeoutMs} ms per attempt` },
        {
          'Circuit breaker': cb
            ? `opens at ${percent(cb.errorRate)} errors over ≥${cb.minRequests} requests in ${cb.windowMs} ms; cooldown ${cb.cooldownMs} ms`
            : 'off',
        },
        { Cache: p.cache ? `on, TTL ${p.cache.ttlMs} ms` : 'off' },
      ]),
    );
    print('\nArms:');
    print(p.arms?.length ? armsTable(p.arms) : '  (none: the default route)');
    print('\nShadows:');
    print(
      p.shadow?.length
        ? table(
            ['TARGET', 'FRACTION', 'TIMEOUT'],
            p.shadow.map((s) => [s.target, percent(s.fraction), `${s.timeoutMs} ms`]),
          )
        : '  (none)',
    );
  }
  if (r.circuits.length > 0) {
    print('\nCircuits (this server):');
    print(
      table(
        ['VERSION', 'STATE'],
        r.circuits.map((c) => [c.version, c.state]),
      ),
    );
  }
  if (r.shadows.length > 0) {
    print('\nShadow statistics (this server):');
    print(shadowStatsTable(r.shadows));
  }
}

// ---- flag parsers ----

/** A fraction 0..1, or a percentage such as 10%. */
function fraction(what: string, v: string): number {
  const pct = v.endsWith('%');
  const n = Number(pct ? v.slice(0, -1) : v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${what} must be a fraction 0..1 or a percentage such as 10%`);
  const f = pct ? n / 100 : n;
  if (f < 0 || f > 1) throw new InvalidArgumentError(`${what} must be between 0 and 1 (or 0% and 100%)`);
  return f;
}

function armArg(v: string, prev: ArmIn[] = []): ArmIn[] {
  const m = /^([^=]+)=(.+):([^:]+)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError('must be name=target:weight, e.g. control=production:95 or canary=3:5');
  const weight = Number(m[3]);
  if (!Number.isFinite(weight) || weight < 0) throw new InvalidArgumentError(`the weight of arm "${m[1]}" must be a number ≥ 0`);
  return [...prev, { name: m[1] as string, target: m[2] as string, weight }];
}

function shadowArg(v: string, prev: ShadowIn[] = []): ShadowIn[] {
  const parts = v.trim().split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0])
    throw new InvalidArgumentError('must be target:fraction[:timeout], e.g. 3:0.1, staging:10% or 3:0.1:500ms');
  const s: ShadowIn = { target: parts[0], fraction: fraction('the shadow fraction', parts[1] ?? '') };
  if (parts[2] !== undefined) s.timeoutMs = durationArg('the shadow timeout')(parts[2]);
  return [...prev, s];
}

function fallbackArg(v: string, prev: FallbackIn[] = []): FallbackIn[] {
  const t = v.trim();
  const i = t.indexOf(':');
  let f: FallbackIn;
  if (i < 0) {
    if (t === '') throw new InvalidArgumentError('must be [model:]version, e.g. 2, stable, other:2 or other:');
    f = { version: t };
  } else {
    const model = t.slice(0, i);
    const version = t.slice(i + 1);
    if (model === '') throw new InvalidArgumentError('must be [model:]version: a model name before ":" (e.g. other:2, or other: for its default route)');
    f = version === '' ? { model } : { model, version };
  }
  return [...prev, f];
}

function stickyArg(v: string): string {
  if (!/^(?:header|parameter):\S+$/.test(v))
    throw new InvalidArgumentError('must be header:<name> (e.g. header:x-user-id) or parameter:<name> (a V2 request parameter)');
  return v;
}

function percentArg(v: string): number {
  const n = Number(v.endsWith('%') ? v.slice(0, -1) : v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 100) throw new InvalidArgumentError('must be a percentage from 0 to 100');
  return n;
}

// ---- commands ----

const routingPath = (model: string, reason?: string): string => `/api/v1/models/${enc(model)}/routing${reason === undefined ? '' : `?reason=${enc(reason)}`}`;

async function show(model: string, flags: ConnFlags): Promise<void> {
  const r = await call<RoutingState>(flags, 'GET', routingPath(model));
  if (flags.json) return printJson(r);
  describePolicy(r);
}

interface SetFlags extends ConnFlags {
  file?: string;
  policy?: string;
  reason?: string;
  arm?: ArmIn[];
  sticky?: string;
  seed?: string;
  shadow?: ShadowIn[];
  fallback?: FallbackIn[];
  timeout?: number;
  circuitBreaker?: boolean;
  cache?: boolean;
  cacheTtl?: number;
}

const CONVENIENCE = [
  ['arm', '--arm'],
  ['sticky', '--sticky'],
  ['seed', '--seed'],
  ['shadow', '--shadow'],
  ['fallback', '--fallback'],
  ['timeout', '--timeout'],
  ['circuitBreaker', '--circuit-breaker'],
  ['cache', '--cache'],
  ['cacheTtl', '--cache-ttl'],
] as const;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A policy from JSON text: the policy itself, or the output of `routing show --json` (its `policy`). */
function parsePolicyJson(text: string, where: string): unknown {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CliError(`${where} is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new CliError(`${where} must be a JSON object (a routing policy)`);
  const o = v as Record<string, unknown>;
  if ('policy' in o && 'model' in o && 'revision' in o) {
    if (o['policy'] === null) throw new CliError(`${where} holds no policy (null); use "switchyard routing clear" to remove a policy`);
    return o['policy'];
  }
  return v;
}

/** The policy `set` sends, from --file, --policy or the convenience flags. */
export async function policyFromFlags(flags: SetFlags): Promise<unknown> {
  const used = CONVENIENCE.filter(([k]) => flags[k] !== undefined).map(([, f]) => f);
  if (flags.file !== undefined && flags.policy !== undefined) throw new CliError('give the policy either with --file or with --policy, not both');
  if (flags.file !== undefined || flags.policy !== undefined) {
    if (used.length)
      throw new CliError(`${flags.file !== undefined ? '--file' : '--policy'} gives the whole policy; it cannot be combined with ${used.join(', ')}`);
    if (flags.policy !== undefined) return parsePolicyJson(flags.policy, '--policy');
    const file = flags.file as string;
    let text: string;
    try {
      text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read ${file}: ${(e as Error).message}`);
    }
    return parsePolicyJson(text, file === '-' ? 'standard input' : file);
  }
  if (used.length === 0) {
    throw new CliError(
      'no policy given: use --file, --policy, or build one with --arm, --sticky, --shadow, --fallback, --timeout, --circuit-breaker, --cache (to remove a policy: switchyard routing clear)',
    );
  }
  if (flags.seed !== undefined && flags.sticky === undefined) throw new CliError('--seed needs --sticky (the seed is hashed with the sticky routing key)');
  if (flags.sticky !== undefined && flags.arm === undefined) throw new CliError('--sticky needs --arm (sticky routing splits traffic over arms)');
  const p: RoutingPolicyInput = {};
  if (flags.arm) p.arms = flags.arm;
  if (flags.sticky !== undefined) p.sticky = flags.seed === undefined ? { key: flags.sticky } : { key: flags.sticky, seed: flags.seed };
  if (flags.shadow) p.shadow = flags.shadow;
  if (flags.fallback) p.fallback = flags.fallback;
  if (flags.timeout !== undefined) p.timeoutMs = flags.timeout;
  if (flags.circuitBreaker) p.circuitBreaker = {};
  if (flags.cacheTtl !== undefined) p.cache = { ttlMs: flags.cacheTtl };
  else if (flags.cache) p.cache = {};
  return p;
}

async function set(model: string, flags: SetFlags): Promise<void> {
  const policy = await policyFromFlags(flags);
  const r = await call<RoutingState>(flags, 'PUT', routingPath(model, flags.reason), { json: policy });
  if (flags.json) return printJson(r);
  print(`Routing policy of ${r.model} set (revision ${r.revision}).\n`);
  describePolicy(r);
}

async function canary(model: string, target: string, pct: number, flags: ConnFlags & { control: string; reason?: string }): Promise<void> {
  const cur = await call<RoutingState>(flags, 'GET', routingPath(model));
  const arms: ArmIn[] = [
    { name: 'control', target: flags.control, weight: 100 - pct },
    { name: 'canary', target, weight: pct },
  ];
  const policy = { ...(cur.policy ?? {}), arms };
  const r = await call<RoutingState>(flags, 'PUT', routingPath(model, flags.reason ?? `canary ${target} at ${pct}%`), { json: policy });
  if (flags.json) return printJson(r);
  const before = cur.policy?.arms;
  print(`${r.model}: ${100 - pct}% → ${flags.control} (control), ${pct}% → ${target} (canary); revision ${r.revision}.`);
  if (before?.length) {
    const total = before.reduce((s, a) => s + a.weight, 0);
    print(`Before: ${before.map((a) => `${a.name}=${a.target} ${total > 0 ? percent(a.weight / total) : '0%'}`).join(', ')}.`);
  }
}

async function clear(model: string, flags: ConnFlags & { reason?: string }): Promise<void> {
  await call<null>(flags, 'DELETE', routingPath(model, flags.reason));
  if (flags.json) return printJson({ model, policy: null });
  print(`Removed the routing policy of ${model}; requests that name no version take the default route.`);
}

/** `switchyard routing`: show and change a model's traffic policy on a running server. */
export function routingCommand(): Command {
  const routing = new Command('routing').description(
    "Show and change a model's traffic policy on a running Switchyard server: weighted arms (canary, A/B), sticky routing, shadows, fallback, timeout, circuit breaker, cache.",
  );

  withConnection(
    routing
      .command('show')
      .description(
        "Show a model's routing policy (revision, arms with weights in %, sticky key and seed, shadows, fallback chain, timeout, circuit breaker, cache) and this server's live circuits and shadow statistics.",
      )
      .argument('<model>', 'registered model name'),
  ).action(action(show));

  withConnection(
    routing
      .command('set')
      .description(
        "Replace a model's routing policy (a new revision). Give the whole policy as JSON (--file or --policy), or build one from flags, e.g. --arm control=production:95 --arm canary=3:5 --sticky header:x-user-id.",
      )
      .argument('<model>', 'registered model name')
      .option('-f, --file <path>', 'policy JSON file ("-" = standard input); the output of "routing show --json" is accepted too')
      .option('--policy <json>', 'the policy as a JSON string, e.g. \'{"arms":[{"name":"a","target":"1","weight":1}]}\'')
      .option('--reason <text>', 'why (recorded in the registry event log)')
      .addOption(
        new Option(
          '--arm <name=target:weight>',
          'a weighted arm: name=version-or-alias:weight (repeatable; weights are relative), e.g. control=production:95',
        ).argParser(armArg),
      )
      .addOption(
        new Option('--sticky <source>', 'sticky assignment by a hashed routing key: header:<name> (e.g. header:x-user-id) or parameter:<name>').argParser(
          stickyArg,
        ),
      )
      .option('--seed <seed>', 'with --sticky: seed hashed with the key (default: the model name); change it to reshuffle assignments')
      .addOption(
        new Option(
          '--shadow <target:fraction>',
          'copy this fraction (0..1 or 10%) of requests to a version or alias, off the request path; optional :timeout, a duration such as 500ms (repeatable)',
        ).argParser(shadowArg),
      )
      .addOption(
        new Option(
          '--fallback <[model:]version>',
          "fallback when the routed version fails, in order (repeatable): 2 or stable = this model's version/alias; other:2 = model other version 2; other: = model other's default route",
        ).argParser(fallbackArg),
      )
      .addOption(
        new Option('--timeout <duration>', 'per-attempt timeout before falling back: a duration such as 200ms or 2s').argParser(durationArg('--timeout')),
      )
      .addOption(retiredOption('--timeout-ms <ms>', '--timeout <duration> (e.g. --timeout 200ms)'))
      .option('--circuit-breaker', 'per-version circuit breaker with the defaults (opens at 50% errors over ≥20 requests in 10 s; 30 s cooldown)')
      .option('--cache', 'cache results with the default TTL (60 s)')
      .addOption(new Option('--cache-ttl <duration>', 'cache results this long: a duration such as 60s or 5m').argParser(durationArg('--cache-ttl')))
      .addOption(retiredOption('--cache-ttl-ms <ms>', '--cache-ttl <duration> (e.g. --cache-ttl 60s)')),
  ).action(action(set));

  withConnection(
    routing
      .command('canary')
      .description(
        'Send <percent>% of traffic to <target> and the rest to the control (arms "control" and "canary"), keeping the rest of the policy: the 5% → 50% → 100% ramp.',
      )
      .argument('<model>', 'registered model name')
      .argument('<target>', 'canary version number or alias')
      .argument('<percent>', 'share of traffic for the canary, 0 to 100', percentArg)
      .option('--control <target>', 'control version number or alias', 'production')
      .option('--reason <text>', 'why (recorded in the registry event log; default "canary <target> at <percent>%")'),
  ).action(action(canary));

  withConnection(
    routing
      .command('clear')
      .description("Remove a model's routing policy: requests that name no version take the default route.")
      .argument('<model>', 'registered model name')
      .option('--reason <text>', 'why (recorded in the registry event log)'),
  ).action(action(clear));

  return routing;
}
