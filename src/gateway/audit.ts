/**
 * @module
 * The audit log: a durable, append-only record of who did what (admin actions, key management, mutating API
 * calls). The database enforces append-only with triggers (migration 0002_tenancy), so this store has no update or
 * delete path. `append` resolves once the row is written; a failed write is logged, counted and rethrown, so the
 * caller decides whether the action may proceed unaudited.
 */
import { sql, type Kysely, type Selectable } from 'kysely';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { err } from '../errors.js';
import type { AuditLogTable, DB } from '../storage/index.js';

export interface AuditEntry {
  /** Epoch ms. */
  at: number;
  /** Key id, user or 'system'. */
  actor: string;
  /** Tenant the action concerns; null for platform-level actions. */
  tenant: string | null;
  /** e.g. "tenant.create", "key.revoke", "POST /api/v1/models". */
  action: string;
  target: string | null;
  /** HTTP status of the outcome. */
  status: number;
  ip: string;
  userAgent: string | null;
  requestId: string | null;
  /** Stored as JSON text. */
  detail: Record<string, unknown> | null;
}

export interface AuditRecord extends AuditEntry {
  /** Increasing with insertion order; the cursor for paging. */
  id: number;
}

export interface AuditQuery {
  tenant?: string;
  actor?: string;
  /** Exact action, or a prefix when it ends with '*' ("key.*"); case-sensitive on both dialects. */
  action?: string;
  /** Epoch ms, inclusive, on `at`. */
  from?: number;
  /** Epoch ms, exclusive, on `at`. */
  to?: number;
  /** @default 100 (at most 1000; 0 returns nothing) */
  limit?: number;
  /** Id cursor: only entries with id < before. Pass the last id of a page to get the next (older) one. */
  before?: number;
}

export interface AuditLogOptions {
  db: Kysely<DB>;
  logger?: Logger;
  /** When given, `switchyard_audit_write_failures_total` is registered here (re-used if already there). */
  metrics?: Registry;
}

export const DEFAULT_AUDIT_LIMIT = 100;
export const MAX_AUDIT_LIMIT = 1000;

const FAILURES = 'switchyard_audit_write_failures_total';

function failureCounter(registry: Registry): Counter {
  const existing = registry.getSingleMetric(FAILURES);
  if (existing instanceof Counter) return existing;
  return new Counter({ name: FAILURES, help: 'Audit log appends that failed (the action reported the failure to its caller).', registers: [registry] });
}

function parseDetail(text: string | null): Record<string, unknown> | null {
  if (text === null) return null;
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { value: v };
  } catch {
    return { unparsed: text };
  }
}

function toRecord(r: Selectable<AuditLogTable>): AuditRecord {
  return {
    id: Number(r.id),
    at: Number(r.at),
    actor: r.actor,
    tenant: r.tenant,
    action: r.action,
    target: r.target,
    status: Number(r.status),
    ip: r.ip,
    userAgent: r.user_agent,
    requestId: r.request_id,
    detail: parseDetail(r.detail),
  };
}

function checkQuery(q: AuditQuery): number {
  for (const k of ['from', 'to', 'before'] as const) {
    const v = q[k];
    if (v !== undefined && !Number.isFinite(v)) throw err('SY_ERR_BAD_REQUEST', `audit query: "${k}" must be a number`);
  }
  const limit = q.limit ?? DEFAULT_AUDIT_LIMIT;
  if (!Number.isInteger(limit) || limit < 0) throw err('SY_ERR_BAD_REQUEST', `audit query: "limit" must be a non-negative integer (got ${limit})`);
  return Math.min(limit, MAX_AUDIT_LIMIT);
}

/**
 * Append-only audit log over the `audit_log` table.
 *
 * @example
 * const audit = new AuditLog({ db: database.db, logger, metrics: registry });
 * await audit.append({ at: Date.now(), actor: 'key_ab12', tenant: 'acme', action: 'key.revoke', target: 'key_cd34',
 *   status: 200, ip: '10.0.0.7', userAgent: 'curl/8.5', requestId: 'req-1', detail: null });
 * const page = await audit.query({ tenant: 'acme', action: 'key.*', limit: 50 });
 * const next = await audit.query({ tenant: 'acme', action: 'key.*', limit: 50, before: page.at(-1)?.id });
 * @see {@link UsageMeter} for the other tenancy store.
 */
export class AuditLog {
  readonly #db: Kysely<DB>;
  readonly #log: Logger | null;
  readonly #failures: Counter | null;

  constructor(opts: AuditLogOptions) {
    this.#db = opts.db;
    this.#log = opts.logger ?? null;
    this.#failures = opts.metrics ? failureCounter(opts.metrics) : null;
  }

  /** Durable append; resolves with the stored record once written. On failure: logs, counts and rethrows. */
  async append(e: AuditEntry): Promise<AuditRecord> {
    try {
      const row = await this.#db
        .insertInto('audit_log')
        .values({
          at: e.at,
          actor: e.actor,
          tenant: e.tenant,
          action: e.action,
          target: e.target,
          status: e.status,
          ip: e.ip,
          user_agent: e.userAgent,
          request_id: e.requestId,
          detail: e.detail === null ? null : JSON.stringify(e.detail),
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      return {
        id: Number(row.id),
        at: e.at,
        actor: e.actor,
        tenant: e.tenant,
        action: e.action,
        target: e.target,
        status: e.status,
        ip: e.ip,
        userAgent: e.userAgent,
        requestId: e.requestId,
        detail: e.detail,
      };
    } catch (cause) {
      this.#failures?.inc();
      this.#log?.error({ err: cause, action: e.action, actor: e.actor, tenant: e.tenant, target: e.target }, 'audit log append failed');
      throw cause;
    }
  }

  /** Entries matching every given filter, newest (highest id) first. */
  async query(q: AuditQuery): Promise<AuditRecord[]> {
    const limit = checkQuery(q);
    if (limit === 0) return [];
    let sel = this.#db.selectFrom('audit_log').selectAll();
    if (q.tenant !== undefined) sel = sel.where('tenant', '=', q.tenant);
    if (q.actor !== undefined) sel = sel.where('actor', '=', q.actor);
    if (q.action !== undefined) {
      if (q.action.endsWith('*')) {
        // substr instead of LIKE: no wildcard escaping, and case-sensitive on SQLite too. Lengths in code points.
        const prefix = q.action.slice(0, -1);
        const n = [...prefix].length;
        if (n > 0) sel = sel.where(sql<string>`substr(action, 1, ${sql.lit(n)})`, '=', prefix);
      } else {
        sel = sel.where('action', '=', q.action);
      }
    }
    if (q.from !== undefined) sel = sel.where('at', '>=', q.from);
    if (q.to !== undefined) sel = sel.where('at', '<', q.to);
    if (q.before !== undefined) sel = sel.where('id', '<', q.before);
    const rows = await sel.orderBy('id', 'desc').limit(limit).execute();
    return rows.map(toRecord);
  }
}
