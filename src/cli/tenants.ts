/**
 * @module
 * `switchyard tenants …`: tenants, their API keys, model shares and usage, through a running server's admin
 * API. Needs a platform admin key (or, for a tenant's own keys and usage, a tenant admin key) in --api-key
 * or SWITCHYARD_API_KEY.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import { LIMIT_FIELDS, SCOPES, type ApiKeyRecord, type ModelAccess, type TenantRecord } from '../gateway/index.js';
import { futureTimeArg, retiredOption, timeArg } from './args.js';
import { action, call, CliError, enc, fields, kv, print, printJson, table, when, withConnection, type ConnFlags } from './client.js';

const positive =
  (what: string, integer: boolean) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n)))
      throw new InvalidArgumentError(`${what} must be a positive ${integer ? 'integer' : 'number'}`);
    return n;
  };

function scopesArg(v: string): string[] {
  const scopes = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
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
  print(
    table(
      ['NAME', 'TIER', 'WEIGHT', 'LIMITS', 'DISABLED', 'CREATED'],
      r.tenants.map((t) => [t.name, t.tier, t.weight, limitText(t), t.disabled ? 'yes' : 'no', when(t.createdAt)]),
    ),
  );
}

interface KeysFlags extends ConnFlags, LimitFlags {
  create?: boolean;
  scopes?: string[];
  name?: string;
  expires?: string;
}

/** List keys at `path` or, with --create, make one there (`tenant` null: platform admin keys). */
async function keysAt(path: string, tenant: string | null, flags: KeysFlags, defaultScopes: string[]): Promise<void> {
  if (!flags.create) {
    const given = (['scopes', 'name', 'expires'] as const).filter((k) => flags[k] !== undefined);
    if (given.length) throw new CliError(`${given.map((k) => `--${k}`).join(', ')} only apply with --create`);
  }
  if (flags.create) {
    const body: Record<string, unknown> = { scopes: flags.scopes ?? defaultScopes };
    if (flags.name !== undefined) body['name'] = flags.name;
    if (flags.expires !== undefined) body['expiresAt'] = flags.expires;
    const limits = limitsOf(flags);
    if (Object.keys(limits).length) body['limits'] = limits;
    const k = await call<ApiKeyRecord & { key: string }>(flags, 'POST', path, { json: body });
    if (flags.json) return printJson(k);
    print(
      fields([{ Id: k.id }, { Tenant: tenant ?? '(platform admin)' }, { Scopes: k.scopes.join(',') }, { Expires: k.expiresAt ? when(k.expiresAt) : 'never' }]),
    );
    print(`\nAPI key (shown once; only its hash is stored):\n${k.key}`);
    return;
  }
  const r = await call<{ keys: ApiKeyRecord[] }>(flags, 'GET', path);
  if (flags.json) return printJson(r);
  if (r.keys.length === 0) return print(tenant === null ? 'No platform admin keys.' : `Tenant ${tenant} has no API keys.`);
  print(
    table(
      ['ID', 'NAME', 'SCOPES', 'STATUS', 'EXPIRES', 'CREATED', 'BY'],
      r.keys.map((k) => [k.id, k.name || '-', k.scopes.join(','), k.status, k.expiresAt ? when(k.expiresAt) : 'never', when(k.createdAt), k.createdBy]),
    ),
  );
}

async function keys(tenant: string, flags: KeysFlags): Promise<void> {
  await keysAt(`/api/v1/tenants/${enc(tenant)}/keys`, tenant, flags, ['infer', 'read']);
}

async function adminKeys(flags: KeysFlags): Promise<void> {
  await keysAt('/api/v1/admin-keys', null, flags, ['admin']);
}

function describeTenant(t: TenantRecord): void {
  print(
    fields([
      { Name: t.name },
      { Description: t.description || '-' },
      { Tier: t.tier },
      { Weight: String(t.weight) },
      { Limits: limitText(t) },
      { Disabled: t.disabled ? 'yes' : 'no' },
      { Created: when(t.createdAt) },
    ]),
  );
}

async function show(name: string, flags: ConnFlags): Promise<void> {
  const t = await call<TenantRecord>(flags, 'GET', `/api/v1/tenants/${enc(name)}`);
  if (flags.json) return printJson(t);
  describeTenant(t);
}

async function update(
  name: string,
  flags: ConnFlags & LimitFlags & { tier?: string; weight?: number; description?: string; disabled?: boolean },
): Promise<void> {
  const body: Record<string, unknown> = {};
  if (flags.tier !== undefined) body['tier'] = flags.tier;
  if (flags.weight !== undefined) body['weight'] = flags.weight;
  if (flags.description !== undefined) body['description'] = flags.description;
  if (flags.disabled !== undefined) body['disabled'] = flags.disabled;
  const limits = limitsOf(flags);
  if (Object.keys(limits).length) body['limits'] = limits;
  if (Object.keys(body).length === 0)
    throw new CliError('nothing to change: give --tier, --weight, --description, --disabled / --no-disabled or a limit (--rps, --burst, …)');
  const t = await call<TenantRecord>(flags, 'PATCH', `/api/v1/tenants/${enc(name)}`, { json: body });
  if (flags.json) return printJson(t);
  print(`Updated tenant ${t.name} (tier ${t.tier}, weight ${t.weight}, limits ${limitText(t)}${t.disabled ? ', disabled' : ''}).`);
}

async function remove(name: string, flags: ConnFlags): Promise<void> {
  const r = await call<unknown>(flags, 'DELETE', `/api/v1/tenants/${enc(name)}`);
  if (flags.json) return printJson(r ?? { tenant: name, deleted: true });
  print(`Deleted tenant ${name}.`);
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

interface UsageFlags extends ConnFlags {
  tenant?: string;
  model?: string;
  key?: string;
  byKey?: boolean;
  since?: string;
  until?: string;
  groupBy?: string;
}

async function usage(flags: UsageFlags): Promise<void> {
  const q = new URLSearchParams();
  if (flags.tenant) q.set('tenant', flags.tenant);
  if (flags.model) q.set('model', flags.model);
  if (flags.key !== undefined) q.set('key', flags.key);
  if (flags.byKey) q.set('by_key', 'true');
  if (flags.since) q.set('from', flags.since);
  if (flags.until) q.set('to', flags.until);
  q.set('group_by', flags.groupBy ?? 'day');
  const r = await call<{
    usage: Array<{
      tenant: string;
      model: string;
      version: number;
      keyId: string | null;
      period: string;
      requests: number;
      rows: number;
      computeMs: number;
      errors: number;
    }>;
  }>(flags, 'GET', `/api/v1/usage?${q}`);
  if (flags.json) return printJson(r);
  if (r.usage.length === 0) return print('No usage recorded.');
  const perKey = flags.byKey === true || flags.key !== undefined;
  print(
    table(
      ['PERIOD', 'TENANT', 'MODEL', 'VERSION', ...(perKey ? ['KEY'] : []), 'REQUESTS', 'ROWS', 'COMPUTE (s)', 'ERRORS'],
      r.usage.map((u) => [
        when(u.period),
        u.tenant || '(none)',
        u.model,
        u.version,
        ...(perKey ? [u.keyId || '(none)'] : []),
        u.requests,
        u.rows,
        (u.computeMs / 1000).toFixed(3),
        u.errors,
      ]),
    ),
  );
}

/** `switchyard tenants`: manage tenants, their keys, shares and usage on a running server. */
export function tenantsCommand(): Command {
  const tenants = new Command('tenants').description(
    'Manage tenants of a running Switchyard server: create, list, show, update, delete, API keys (tenant and platform admin), revoke, share models, usage.',
  );

  withConnection(
    withLimits(
      tenants
        .command('create')
        .description("Create a tenant (platform admin key). Limits override the tier's defaults.")
        .argument('<name>', 'tenant name (lowercase, no dots); its models are named <name>.<model>')
        .option('--tier <tier>', 'free, standard (default), premium or unlimited')
        .addOption(new Option('--weight <w>', "share of a busy model's capacity (fair queueing); default from the tier").argParser(positive('--weight', false)))
        .option('-d, --description <text>', 'description'),
    ),
  ).action(action(create));

  withConnection(tenants.command('list').description('List tenants with their tier and effective limits.')).action(action(list));

  withConnection(
    withLimits(
      tenants
        .command('keys')
        .description("List a tenant's API keys, or with --create make one (the key is printed once).")
        .argument('<tenant>', 'tenant name')
        .option('--create', 'create a key instead of listing')
        .addOption(new Option('--scopes <list>', 'comma-separated scopes for --create: infer, read, admin (default: infer,read)').argParser(scopesArg))
        .option('--name <label>', 'a label for the new key')
        .addOption(
          new Option('--expires <when>', 'expiry for --create: an ISO-8601 time or a duration from now (30s, 12h, 90d); default never').argParser(
            futureTimeArg,
          ),
        ),
    ),
  ).action(action(keys));

  withConnection(
    withLimits(
      tenants
        .command('admin-keys')
        .description('List platform admin keys, or with --create make one (the key is printed once). Needs a platform admin key.')
        .option('--create', 'create a key instead of listing')
        .addOption(new Option('--scopes <list>', 'comma-separated scopes for --create: infer, read, admin (default: admin)').argParser(scopesArg))
        .option('--name <label>', 'a label for the new key')
        .addOption(
          new Option('--expires <when>', 'expiry for --create: an ISO-8601 time or a duration from now (30s, 12h, 90d); default never').argParser(
            futureTimeArg,
          ),
        ),
    ),
  ).action(action(adminKeys));

  withConnection(
    tenants.command('show').description('Show a tenant: tier, weight, effective limits, whether it is disabled.').argument('<name>', 'tenant name'),
  ).action(action(show));

  withConnection(
    withLimits(
      tenants
        .command('update')
        .description("Change a tenant's tier, weight, description, limits, or disable it (its keys stop working; --no-disabled enables it again).")
        .argument('<name>', 'tenant name')
        .option('--tier <tier>', 'free, standard, premium or unlimited')
        .addOption(new Option('--weight <w>', "share of a busy model's capacity (fair queueing)").argParser(positive('--weight', false)))
        .option('-d, --description <text>', 'description')
        .option('--disabled', 'disable the tenant')
        .option('--no-disabled', 'enable it again'),
    ),
  ).action(action(update));

  withConnection(
    tenants
      .command('delete')
      .description('Delete a tenant and its API keys (they stop working); the models it owned become platform models.')
      .argument('<name>', 'tenant name'),
  ).action(action(remove));

  withConnection(
    tenants
      .command('revoke')
      .description(
        'Revoke an API key by its id (the sy_… prefix shown in listings); it stops working at once on this server, within the auth cache time on others.',
      )
      .argument('<key-id>', 'key id'),
  ).action(action(revoke));

  withConnection(
    tenants
      .command('share')
      .description('Share a model with a tenant ("*" = every tenant): it can see and call it, not change it. --remove stops sharing.')
      .argument('<model>', 'model name')
      .argument('<tenant>', 'tenant name or "*"')
      .option('--remove', 'stop sharing'),
  ).action(action(share));

  withConnection(
    tenants
      .command('usage')
      .description('Usage per tenant, model and version (and API key with --by-key): requests, rows, compute seconds, errors.')
      .option('--tenant <name>', 'only this tenant')
      .option('--model <name>', 'only this model')
      .option('--key <id>', 'only requests made with this API key id ("" = without a key); implies --by-key')
      .option('--by-key', 'one row per API key too')
      .addOption(new Option('--since <time>', 'from this time, inclusive: ISO-8601 or a duration ago (30m, 2h, 7d)').argParser(timeArg))
      .addOption(new Option('--until <time>', 'up to this time, exclusive: ISO-8601 or a duration ago').argParser(timeArg))
      .addOption(retiredOption('--from <time>', '--since <time>'))
      .addOption(retiredOption('--to <time>', '--until <time>'))
      .addOption(new Option('--group-by <period>', 'hour, day or total').choices(['hour', 'day', 'total']).default('day')),
  ).action(action(usage));

  return tenants;
}
