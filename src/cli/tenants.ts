/**
 * @module
 * `switchyard tenants …`: tenants, their API keys, model shares and usage, through a running server's admin
 * API. Needs a platform admin key (or, for a tenant's own keys and usage, a tenant admin key) in --api-key
 * or SWITCHYARD_API_KEY.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { LIMIT_FIELDS, SCOPES, type ApiKeyRecord, type ModelAccess, type TenantRecord } from '../gateway/index.js';
import { action, call, enc, fields, kv, print, printJson, table, when, withConnection, type ConnFlags } from './client.js';

const positive = (what: string, integer: boolean) => (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw new InvalidArgumentError(`${what} must be a positive ${integer ? 'integer' : 'number'}`);
  return n;
};

/** An expiry: an ISO time, or a duration from now such as 30d, 12h, 90m. */
export function expiryArg(v: string): string {
  const m = /^(\d+)([dhm])$/.exec(v.trim());
  if (m) return new Date(Date.now() + Number(m[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[m[2] as 'd' | 'h' | 'm']).toISOString();
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new InvalidArgumentError('must be an ISO-8601 time or a duration such as 30d, 12h or 90m');
  return new Date(t).toISOString();
}

function scopesArg(v: string): string[] {
  const scopes = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of scopes) if (!(SCOPES as readonly string[]).includes(s)) throw new InvalidArgumentError(`unknown scope "${s}" (${SCOPES.join(', ')})`);
  if (scopes.length === 0) throw new InvalidArgumentError('give at least one scope');
  return scopes;
}

type LimitFlags = { [K in (typeof LIMIT_FIELDS)[number]]?: number };

function limitsOf(f: LimitFlags): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of LIMIT_FIELDS) if (f[k] !== undefined) out[k] = f[k];
  return out;
}

function withLimits(cmd: Command): Command {
  return cmd
    .addOption(new Option('--rps <n>', 'sustained requests per second (token bucket)').argParser(positive('--rps', false)))
    .addOption(new Option('--burst <n>', 'requests that may arrive at once (bucket capacity)').argParser(positive('--burst', true)))
    .addOption(new Option('--concurrency <n>', 'requests in flight at once').argParser(positive('--concurrency', true)))
    .addOption(new Option('--daily-quota <n>', 'requests per UTC day').argParser(positive('--daily-quota', true)))
    .addOption(new Option('--monthly-quota <n>', 'requests per UTC month').argParser(positive('--monthly-quota', true)))
    .addOption(new Option('--rpm <n>', 'LLM API requests per minute').argParser(positive('--rpm', true)))
    .addOption(new Option('--tpm <n>', 'LLM API tokens (prompt + completion) per minute').argParser(positive('--tpm', true)));
}

const limitText = (t: TenantRecord): string => kv(Object.fromEntries(Object.entries(t.effectiveLimits).filter(([, v]) => v !== null)));

async function create(name: string, flags: ConnFlags & LimitFlags & { tier?: string; weight?: number; description?: string }): Promise<void> {
  const body: Record<string, unknown> = { name, limits: limitsOf(flags) };
  if (flags.tier !== undefined) body['tier'] = flags.tier;
  if (flags.weight !== undefined) body['weight'] = flags.weight;
  if (flags.description !== undefined) body['description'] = flags.description;
  const t = await call<TenantRecord>(flags, 'POST', '/api/v1/tenants', { json: body });
  if (flags.json) return printJson(t);
  print(`Created tenant ${t.name} (tier ${t.tier}, weight ${t.weight}, limits ${limitText(t)}). Its models are named "${t.name}.<model>".`);
}

async function list(flags: ConnFlags): Promise<void> {
  const r = await call<{ tenants: TenantRecord[] }>(flags, 'GET', '/api/v1/tenants');
  if (flags.json) return printJson(r);
  if (r.tenants.length === 0) return print('No tenants.');
  print(table(['NAME', 'TIER', 'WEIGHT', 'LIMITS', 'DISABLED', 'CREATED'], r.tenants.map((t) => [
    t.name, t.tier, t.weight, limitText(t), t.disabled ? 'yes' : 'no', when(t.createdAt),
  ])));
}

interface KeysFlags extends ConnFlags, LimitFlags { create?: boolean; scopes?: string[]; name?: string; expires?: string }

async function keys(tenant: string, flags: KeysFlags): Promise<void> {
  if (flags.create) {
    const body: Record<string, unknown> = { scopes: flags.scopes ?? ['infer', 'read'] };
    if (flags.name !== undefined) body['name'] = flags.name;
    if (flags.expires !== undefined) body['expiresAt'] = flags.expires;
    const limits = limitsOf(flags);
    if (Object.keys(limits).length) body['limits'] = limits;
    const k = await call<ApiKeyRecord & { key: string }>(flags, 'POST', `/api/v1/tenants/${enc(tenant)}/keys`, { json: body });
    if (flags.json) return printJson(k);
    print(fields([{ Id: k.id }, { Tenant: tenant }, { Scopes: k.scopes.join(',') }, { Expires: k.expiresAt ? when(k.expiresAt) : 'never' }]));
    print(`\nAPI key (shown once; only its hash is stored):\n${k.key}`);
    return;
  }
  const r = await call<{ keys: ApiKeyRecord[] }>(flags, 'GET', `/api/v1/tenants/${enc(tenant)}/keys`);
  if (flags.json) return printJson(r);
  if (r.keys.length === 0) return print(`Tenant ${tenant} has no API keys.`);
  print(table(['ID', 'NAME', 'SCOPES', 'STATUS', 'EXPIRES', 'CREATED', 'BY'], r.keys.map((k) => [
    k.id, k.name || '-', k.scopes.join(','), k.status, k.expiresAt ? when(k.expiresAt) : 'never', when(k.createdAt), k.createdBy,
  ])));
}

async function revoke(id: string, flags: ConnFlags): Promise<void> {
  const k = await call<ApiKeyRecord>(flags, 'DELETE', `/api/v1/keys/${enc(id)}`);
  if (flags.json) return printJson(k);
  print(`Revoked API key ${k.id}${k.tenant ? ` of tenant ${k.tenant}` : ' (platform admin)'} at ${when(k.revokedAt ?? '')}.`);
}

async function share(model: string, tenant: string, flags: ConnFlags & { remove?: boolean }): Promise<void> {
  const a = await call<ModelAccess>(flags, flags.remove ? 'DELETE' : 'PUT', `/api/v1/models/${enc(model)}/shares/${enc(tenant)}`);
  if (flags.json) return printJson(a);
  print(`Model ${a.model}: owner ${a.owner ?? '(platform)'}, shared with ${a.shared.join(', ') || 'nobody'}.`);
}

interface UsageFlags extends ConnFlags { tenant?: string; model?: string; key?: string; byKey?: boolean; from?: string; to?: string; groupBy?: string }

async function usage(flags: UsageFlags): Promise<void> {
  const q = new URLSearchParams();
  if (flags.tenant) q.set('tenant', flags.tenant);
  if (flags.model) q.set('model', flags.model);
  if (flags.key !== undefined) q.set('key', flags.key);
  if (flags.byKey) q.set('by_key', 'true');
  if (flags.from) q.set('from', flags.from);
  if (flags.to) q.set('to', flags.to);
  q.set('group_by', flags.groupBy ?? 'day');
  const r = await call<{ usage: Array<{ tenant: string; model: string; version: number; keyId: string | null; period: string; requests: number; rows: number; computeMs: number; errors: number }> }>(flags, 'GET', `/api/v1/usage?${q}`);
  if (flags.json) return printJson(r);
  if (r.usage.length === 0) return print('No usage recorded.');
  const perKey = flags.byKey === true || flags.key !== undefined;
  print(table(['PERIOD', 'TENANT', 'MODEL', 'VERSION', ...(perKey ? ['KEY'] : []), 'REQUESTS', 'ROWS', 'COMPUTE (s)', 'ERRORS'], r.usage.map((u) => [
    when(u.period), u.tenant || '(none)', u.model, u.version, ...(perKey ? [u.keyId || '(none)'] : []), u.requests, u.rows, (u.computeMs / 1000).toFixed(3), u.errors,
  ])));
}

/** `switchyard tenants`: manage tenants, their keys, shares and usage on a running server. */
export function tenantsCommand(): Command {
  const tenants = new Command('tenants')
    .description('Manage tenants of a running Switchyard server: create, list, API keys, revoke, share models, usage.');

  withConnection(withLimits(tenants.command('create')
    .description('Create a tenant (platform admin key). Limits override the tier\'s defaults.')
    .argument('<name>', 'tenant name (lowercase, no dots); its models are named <name>.<model>')
    .option('--tier <tier>', 'free, standard (default), premium or unlimited')
    .addOption(new Option('--weight <w>', "share of a busy model's capacity (fair queueing); default from the tier").argParser(positive('--weight', false)))
    .option('-d, --description <text>', 'description')))
    .action(action(create));

  withConnection(tenants.command('list').description('List tenants with their tier and effective limits.'))
    .action(action(list));

  withConnection(withLimits(tenants.command('keys')
    .description("List a tenant's API keys, or with --create make one (the key is printed once).")
    .argument('<tenant>', 'tenant name')
    .option('--create', 'create a key instead of listing')
    .addOption(new Option('--scopes <list>', 'comma-separated scopes for --create: infer, read, admin (default: infer,read)').argParser(scopesArg))
    .option('--name <label>', 'a label for the new key')
    .addOption(new Option('--expires <when>', 'expiry for --create: ISO time or duration (30d, 12h, 90m); default never').argParser(expiryArg))))
    .action(action(keys));

  withConnection(tenants.command('revoke')
    .description('Revoke an API key by its id (the sy_… prefix shown in listings); it stops working at once on this server, within the auth cache time on others.')
    .argument('<key-id>', 'key id'))
    .action(action(revoke));

  withConnection(tenants.command('share')
    .description('Share a model with a tenant ("*" = every tenant): it can see and call it, not change it. --remove stops sharing.')
    .argument('<model>', 'model name')
    .argument('<tenant>', 'tenant name or "*"')
    .option('--remove', 'stop sharing'))
    .action(action(share));

  withConnection(tenants.command('usage')
    .description('Usage per tenant, model and version (and API key with --by-key): requests, rows, compute seconds, errors.')
    .option('--tenant <name>', 'only this tenant')
    .option('--model <name>', 'only this model')
    .option('--key <id>', 'only requests made with this API key id ("" = without a key); implies --by-key')
    .option('--by-key', 'one row per API key too')
    .option('--from <time>', 'ISO time, inclusive')
    .option('--to <time>', 'ISO time, exclusive')
    .addOption(new Option('--group-by <period>', 'hour, day or total').choices(['hour', 'day', 'total']).default('day')))
    .action(action(usage));

  return tenants;
}
