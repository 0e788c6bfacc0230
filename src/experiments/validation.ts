/**
 * @module
 * Checks on an experiment's definition (arms, guardrails) and the mapping between its table row and its record.
 */
import { randomInt } from 'node:crypto';
import type { Selectable } from 'kysely';
import { err } from '../errors.js';
import { iso } from '../storage/index.js';
import { ARM_NAME } from '../registry/index.js';
import type { ExperimentsTable } from '../storage/index.js';
import type { ExperimentArm, ExperimentRecord, ExperimentStatus, Guardrails } from './types.js';

const MAX_ARMS = 16;
const MAX_TARGET = 64;
const MAX_WEIGHT = 1_000_000;
const GUARDRAIL_KEYS = new Set(['maxErrorRate', 'maxP99Ms', 'minRequests', 'autoRollback']);

export interface StoredConfig {
  arms: ExperimentArm[];
  control: string;
  guardrails: Guardrails;
}

export const bad = (msg: string): Error => err('SY_ERR_BAD_REQUEST', msg);
export const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

export function newId(): string {
  let s = 'exp_';
  for (let i = 0; i < 10; i++) s += randomInt(36).toString(36);
  return s;
}

export function checkArms(arms: unknown): ExperimentArm[] {
  if (!Array.isArray(arms) || arms.length < 2 || arms.length > MAX_ARMS) throw bad(`experiment: "arms" must be a list of 2 to ${MAX_ARMS} arms`);
  const names = new Set<string>();
  let total = 0;
  const out = arms.map((a: unknown, i) => {
    if (!isObject(a)) throw bad(`experiment: arms[${i}] must be an object`);
    const { name, target, weight } = a;
    if (typeof name !== 'string' || !ARM_NAME.test(name)) throw bad(`experiment: arms[${i}].name must match ${ARM_NAME.source}`);
    if (names.has(name)) throw bad(`experiment: arm name "${name}" is used twice`);
    names.add(name);
    if (typeof target !== 'string' || target.length === 0 || target.length > MAX_TARGET)
      throw bad(`experiment: arms[${i}].target must be a version number or alias`);
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0 || weight > MAX_WEIGHT) {
      throw bad(`experiment: arms[${i}].weight must be a number in [0, ${MAX_WEIGHT}]`);
    }
    total += weight;
    return { name, target, weight };
  });
  if (!(total > 0)) throw bad('experiment: at least one arm needs a weight above 0');
  return out;
}

export function checkGuardrails(g: unknown): Guardrails {
  if (g === undefined) return { minRequests: 100, autoRollback: true };
  if (!isObject(g)) throw bad('experiment: "guardrails" must be an object');
  for (const k of Object.keys(g)) if (!GUARDRAIL_KEYS.has(k)) throw bad(`experiment: unknown guardrail "${k}"`);
  const { maxErrorRate, maxP99Ms, minRequests = 100, autoRollback = true } = g;
  if (maxErrorRate !== undefined && (typeof maxErrorRate !== 'number' || !(maxErrorRate >= 0 && maxErrorRate <= 1))) {
    throw bad('experiment: guardrails.maxErrorRate must be a number in [0, 1]');
  }
  if (maxP99Ms !== undefined && (typeof maxP99Ms !== 'number' || !Number.isFinite(maxP99Ms) || maxP99Ms <= 0)) {
    throw bad('experiment: guardrails.maxP99Ms must be a positive number of milliseconds');
  }
  if (typeof minRequests !== 'number' || !Number.isSafeInteger(minRequests) || minRequests < 1) {
    throw bad('experiment: guardrails.minRequests must be a positive integer');
  }
  if (typeof autoRollback !== 'boolean') throw bad('experiment: guardrails.autoRollback must be true or false');
  return {
    ...(maxErrorRate === undefined ? {} : { maxErrorRate }),
    ...(maxP99Ms === undefined ? {} : { maxP99Ms }),
    minRequests,
    autoRollback,
  };
}

export function parseConfig(text: string): StoredConfig {
  const c = JSON.parse(text) as Partial<StoredConfig>;
  const arms = Array.isArray(c.arms) ? c.arms : [];
  const g: Record<string, unknown> = isObject(c.guardrails) ? c.guardrails : {};
  const guardrails: Guardrails = {
    ...(typeof g['maxErrorRate'] === 'number' ? { maxErrorRate: g['maxErrorRate'] } : {}),
    ...(typeof g['maxP99Ms'] === 'number' ? { maxP99Ms: g['maxP99Ms'] } : {}),
    minRequests: typeof g['minRequests'] === 'number' ? g['minRequests'] : 100,
    autoRollback: typeof g['autoRollback'] === 'boolean' ? g['autoRollback'] : true,
  };
  return { arms, control: typeof c.control === 'string' ? c.control : (arms[0]?.name ?? ''), guardrails };
}

export function toRecord(r: Selectable<ExperimentsTable>): ExperimentRecord {
  const c = parseConfig(r.config);
  return {
    id: r.id,
    model: r.model,
    description: r.description,
    status: r.status as ExperimentStatus,
    arms: c.arms,
    control: c.control,
    guardrails: c.guardrails,
    createdBy: r.created_by,
    createdAt: iso(Number(r.created_at)),
    stoppedAt: r.stopped_at === null ? null : iso(Number(r.stopped_at)),
    stopReason: r.stop_reason,
  };
}

export function isUniqueViolation(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}
