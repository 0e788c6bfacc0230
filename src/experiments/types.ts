/**
 * @module
 * The experiment API's shapes (records, inputs, reports, timelines) and its name rules.
 */
import type { Logger } from 'pino';
import type { SrmTest } from './stats.js';
import type { ArmOutcomes, Comparison } from './report.js';

export type ExperimentStatus = 'running' | 'stopped' | 'rolled_back';

export interface ExperimentArm {
  readonly name: string;
  /** Version number or alias of the experiment's model. */
  readonly target: string;
  /** Relative weight (normalised in reports and SRM). */
  readonly weight: number;
}

export interface Guardrails {
  /** Roll back when a non-control arm's error rate exceeds this (0..1); absent = not checked. */
  readonly maxErrorRate?: number;
  /** Roll back when a non-control arm's p99 latency exceeds this many ms; absent = not checked. */
  readonly maxP99Ms?: number;
  /** Only judge an arm with at least this many requests in the window. Default 100. */
  readonly minRequests: number;
  /** Roll traffic back to the control on a breach (else only report it). Default true. */
  readonly autoRollback: boolean;
}

export interface ExperimentRecord {
  readonly id: string;
  readonly model: string;
  readonly description: string;
  readonly status: ExperimentStatus;
  readonly arms: readonly ExperimentArm[];
  /** Name of the control arm. */
  readonly control: string;
  readonly guardrails: Guardrails;
  readonly createdBy: string;
  readonly createdAt: string;
  readonly stoppedAt: string | null;
  readonly stopReason: string | null;
}

export interface CreateExperimentInput {
  /** Default: generated (`exp_<10 base36>`); must match {@link EXPERIMENT_ID}. */
  readonly id?: string;
  readonly model: string;
  readonly description?: string;
  /** At least 2, unique names. */
  readonly arms: readonly ExperimentArm[];
  /** An arm name; default the first arm. */
  readonly control?: string;
  readonly guardrails?: Partial<Guardrails>;
}

/** One outcome of a unit (e.g. a conversion or a revenue amount). */
export interface OutcomeEvent {
  readonly unit: string;
  readonly metric: string;
  readonly value: number;
  /** ISO 8601; default now. */
  readonly at?: string;
}

export type { Comparison, MetricSummary } from './report.js';

export interface ArmReport extends ArmOutcomes {
  readonly requests: { readonly hash: number; readonly random: number };
}

export interface ExperimentReport {
  readonly experiment: ExperimentRecord;
  readonly generatedAt: string;
  readonly arms: readonly ArmReport[];
  readonly comparisons: readonly Comparison[];
  /** Over exposures per arm vs arm weights. */
  readonly srm: SrmTest | null;
  /** Events whose unit was never exposed. */
  readonly unattributedEvents: number;
}

/** Cumulative results at one time: what the report would have said then (without request counters). */
export interface ExperimentPoint {
  /** The boundary (ISO 8601): units exposed and events that happened at or before it. */
  readonly at: string;
  readonly arms: readonly ArmOutcomes[];
  readonly comparisons: readonly Comparison[];
  readonly srm: SrmTest | null;
}

export interface ExperimentTimeline {
  readonly experiment: ExperimentRecord;
  readonly from: string;
  readonly until: string;
  readonly stepMs: number;
  /** Oldest first; the last one is at `until`. */
  readonly points: readonly ExperimentPoint[];
}

/** Boundaries a timeline may have at most. */
export const MAX_TIMELINE_POINTS = 100;

export interface ExperimentStoreOptions {
  /** How often pending exposures and traffic are written, ms. Default 1000. */
  flushMs?: number;
  /** Pending (unwritten) exposures kept at most; beyond, new ones are dropped and counted. Default 100000. */
  maxPendingUnits?: number;
  logger?: Logger;
}

export const EXPERIMENT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const METRIC_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
export const MAX_EVENTS_PER_CALL = 1000;
