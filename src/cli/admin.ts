/**
 * @module
 * `switchyard whoami` and `switchyard audit`: who the presented API key is, and the audit log of control-plane
 * actions (every non-GET under `/api/v1`, refused attempts included), through a running server's admin API.
 */
import { Command, Option } from 'commander';
import { positiveIntArg, timeArg } from './args.js';
import { action, call, print, printJson, table, when, withConnection, type ConnFlags } from './client.js';

interface Whoami {
  kind: 'platform' | 'tenant';
  actor: string;
  tenant: { name: string; tier: string } | null;
  key: { id: string; scopes: string[]; expiresAt: string | null } | null;
}

async function whoami(flags: ConnFlags): Promise<void> {
  const w = await call<Whoami>(flags, 'GET', '/api/v1/whoami');
  if (flags.json) return printJson(w);
  const key =
    w.key === null ? 'no key: open mode' : `key ${w.key.id}, scopes ${w.key.scopes.join(',')}${w.key.expiresAt ? `, expires ${when(w.key.expiresAt)}` : ''}`;
  print(
    w.kind === 'platform'
      ? `Platform admin, as ${w.actor} (${key}).`
      : `Tenant ${w.tenant?.name ?? '?'} (tier ${w.tenant?.tier ?? '?'}), as ${w.actor} (${key}).`,
  );
}

interface AuditFlags extends ConnFlags {
  tenant?: string;
  by?: string;
  action?: string;
  since?: string;
  until?: string;
  limit?: number;
  before?: number;
}

/** An entry as GET /api/v1/audit returns it. */
interface AuditJson {
  id: number;
  at: string;
  actor: string;
  tenant: string | null;
  action: string;
  target: string | null;
  status: number;
}

async function audit(flags: AuditFlags): Promise<void> {
  const q = new URLSearchParams();
  if (flags.tenant !== undefined) q.set('tenant', flags.tenant);
  if (flags.by !== undefined) q.set('actor', flags.by);
  if (flags.action !== undefined) q.set('action', flags.action);
  if (flags.since !== undefined) q.set('from', flags.since);
  if (flags.until !== undefined) q.set('to', flags.until);
  if (flags.limit !== undefined) q.set('limit', String(flags.limit));
  if (flags.before !== undefined) q.set('before', String(flags.before));
  const r = await call<{ entries: AuditJson[] }>(flags, 'GET', `/api/v1/audit${q.size ? `?${q}` : ''}`);
  if (flags.json) return printJson(r);
  if (r.entries.length === 0) return print('No audit entries.');
  print(
    table(
      ['ID', 'TIME', 'ACTOR', 'TENANT', 'ACTION', 'TARGET', 'STATUS'],
      r.entries.map((e) => [e.id, when(e.at), e.actor, e.tenant ?? '-', e.action, e.target ?? '-', e.status]),
    ),
  );
  const last = r.entries.at(-1);
  if (last !== undefined && r.entries.length >= (flags.limit ?? 100)) print(`Older entries: --before ${last.id}`);
}

/** `switchyard whoami`. */
export function whoamiCommand(): Command {
  return withConnection(
    new Command('whoami').description('Show who the API key in --api-key / SWITCHYARD_API_KEY is: a platform admin or a tenant, and its key id.'),
  ).action(action(whoami));
}

/** `switchyard audit`. */
export function auditCommand(): Command {
  return withConnection(
    new Command('audit')
      .description(
        'The audit log of control-plane actions, newest first: who (key id), which tenant, what, the outcome. Needs an admin key (a tenant admin key sees its own tenant).',
      )
      .option('--tenant <name>', "only actions made with this tenant's keys")
      .option('--by <actor>', 'only actions by this actor: an API key id, or the --actor name given in open mode (--actor itself names who you are)')
      .option('--action <action>', 'only this action (METHOD route, e.g. "POST /api/v1/tenants"), or a prefix ending in *, e.g. "DELETE /api/v1/models*"')
      .addOption(new Option('--since <time>', 'from this time, inclusive: ISO-8601 or a duration ago (30m, 2h, 7d)').argParser(timeArg))
      .addOption(new Option('--until <time>', 'up to this time, exclusive: ISO-8601 or a duration ago').argParser(timeArg))
      .addOption(new Option('--limit <n>', 'at most this many entries (server default 100, at most 1000)').argParser(positiveIntArg('--limit', 1000)))
      .addOption(
        new Option('--before <id>', 'only entries with a smaller id (paging: the last id of the previous page)').argParser(positiveIntArg('--before')),
      ),
  ).action(action(audit));
}
