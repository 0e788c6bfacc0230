/**
 * @module
 * Tenant-scoped addressing of the tenant-owned objects whose ids their creator picks (alert rules,
 * experiments): a tenant's live in its namespace, `<tenant>.<name>`, as its models do. A tenant key creates
 * only there (403 elsewhere, whether or not the id exists: no existence oracle) and sees only what is there; a
 * foreign id answers exactly as a missing one. Platform keys see and address every id.
 *
 * @example
 * if (!inNamespace(tenant, id)) throw notFound(id); // the very error a missing one gets
 */
import { err } from '../../errors.js';

/** Whether a request acting for `tenant` (null: the platform) may address `id`. */
export function inNamespace(tenant: string | null, id: string): boolean {
  return tenant === null || (id.startsWith(`${tenant}.`) && id.length > tenant.length + 1);
}

/** 403 unless `id` is in the tenant's namespace (checked before anything is looked up). */
export function checkCreatableId(tenant: string | null, id: string, what: string): void {
  if (!inNamespace(tenant, id))
    throw err('SY_ERR_FORBIDDEN', `tenant keys create ${what}s only in their namespace: name it "${tenant ?? ''}.<${what.replace(/ /g, '-')}>"`);
}
