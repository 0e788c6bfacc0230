/**
 * @module
 * Alert rules: what a rule watches, its validation (a 400 naming each bad field) and its redacted form.
 */
import { z } from 'zod';
import { err } from '../errors.js';
import { MODEL_NAME } from '../registry/index.js';

/**
 * What a rule watches. Units are the signal source's: drift is the drift score of a model version (share of
 * drifting features), feature_drift a per-feature distance (psi, js, or the KS statistic D), quality a
 * per-feature rate (0..1), latency_p99 milliseconds, error_rate a fraction of requests (0..1).
 */
export type AlertKind = 'drift' | 'feature_drift' | 'quality' | 'latency_p99' | 'error_rate';
export type DriftMetric = 'psi' | 'js' | 'ks';
export type QualityMetric = 'missing_rate' | 'nan_rate' | 'out_of_range_rate';

export interface AlertRule {
  /** /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/ */
  readonly id: string;
  readonly kind: AlertKind;
  /** The model it watches. */
  readonly model: string;
  /** Absent: the signal source decides (every served version; the worst wins). */
  readonly version?: number;
  /** feature_drift / quality only: which feature (absent: the worst feature). */
  readonly feature?: string;
  /** feature_drift (psi | js | ks, default psi) and quality (missing_rate | nan_rate | out_of_range_rate, default missing_rate) only. */
  readonly metric?: DriftMetric | QualityMetric;
  /** Fires when the value is above it. */
  readonly threshold: number;
  /** How long the value must stay above the threshold before the rule fires. Default 0. */
  readonly forMs: number;
  /** http(s) URL; with `secret`, deliveries are signed (see {@link signWebhook}). */
  readonly webhook?: { readonly url: string; readonly secret?: string };
  /** Default true. */
  readonly enabled: boolean;
  readonly description?: string;
}

/** Where signal values come from (the monitoring service implements it): the current value, or null when there is no data yet. */
export interface AlertSignals {
  value(rule: AlertRule): number | null;
}

const RULE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const KINDS = ['drift', 'feature_drift', 'quality', 'latency_p99', 'error_rate'] as const;
const DRIFT_METRICS: readonly string[] = ['psi', 'js', 'ks'];
const QUALITY_METRICS: readonly string[] = ['missing_rate', 'nan_rate', 'out_of_range_rate'];
const PER_FEATURE: readonly string[] = ['feature_drift', 'quality'];

function httpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

const ruleSchema = z
  .strictObject({
    id: z.string().regex(RULE_ID, 'letters, digits, _ . - (at most 64, starting with a letter or digit)'),
    kind: z.enum(KINDS),
    model: z.string().regex(MODEL_NAME, 'a model name'),
    version: z.number().int().min(1).optional(),
    feature: z.string().min(1).max(256).optional(),
    metric: z.enum(['psi', 'js', 'ks', 'missing_rate', 'nan_rate', 'out_of_range_rate']).optional(),
    threshold: z.number().min(0),
    forMs: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400_000)
      .default(0),
    webhook: z
      .strictObject({
        url: z.string().max(2048).refine(httpUrl, 'an http(s) URL'),
        secret: z.string().min(1).max(1024).optional(),
      })
      .optional(),
    enabled: z.boolean().default(true),
    description: z.string().max(1024).optional(),
  })
  .superRefine((r, ctx) => {
    const perFeature = PER_FEATURE.includes(r.kind);
    if (r.feature !== undefined && !perFeature) ctx.addIssue({ code: 'custom', path: ['feature'], message: 'only for feature_drift and quality rules' });
    if (r.metric !== undefined) {
      if (!perFeature) ctx.addIssue({ code: 'custom', path: ['metric'], message: 'only for feature_drift and quality rules' });
      else if (r.kind === 'feature_drift' && !DRIFT_METRICS.includes(r.metric))
        ctx.addIssue({ code: 'custom', path: ['metric'], message: 'psi, js or ks for feature_drift' });
      else if (r.kind === 'quality' && !QUALITY_METRICS.includes(r.metric))
        ctx.addIssue({ code: 'custom', path: ['metric'], message: 'missing_rate, nan_rate or out_of_range_rate for quality' });
    }
    if ((r.kind === 'error_rate' || r.kind === 'quality') && r.threshold > 1)
      ctx.addIssue({ code: 'custom', path: ['threshold'], message: 'a rate: at most 1' });
  });

/** Validate an alert rule and fill its defaults; a 400 naming each bad field. */
export function parseAlertRule(v: unknown): AlertRule {
  const r = ruleSchema.safeParse(v);
  if (!r.success) {
    const issues: string[] = [];
    for (const i of r.error.issues) {
      const at = i.path.map(String);
      if (i.code === 'unrecognized_keys') for (const k of i.keys) issues.push(`${[...at, k].join('.')}: unknown field`);
      else issues.push(`${at.length > 0 ? at.join('.') : '(rule)'}: ${i.message}`);
    }
    throw err('SY_ERR_BAD_REQUEST', `invalid alert rule: ${issues.join('; ')}`);
  }
  const p = r.data;
  const metric = p.metric ?? (p.kind === 'feature_drift' ? 'psi' : p.kind === 'quality' ? 'missing_rate' : undefined);
  return {
    id: p.id,
    kind: p.kind,
    model: p.model,
    ...(p.version === undefined ? {} : { version: p.version }),
    ...(p.feature === undefined ? {} : { feature: p.feature }),
    ...(metric === undefined ? {} : { metric }),
    threshold: p.threshold,
    forMs: p.forMs,
    ...(p.webhook === undefined ? {} : { webhook: { url: p.webhook.url, ...(p.webhook.secret === undefined ? {} : { secret: p.webhook.secret }) } }),
    enabled: p.enabled,
    ...(p.description === undefined ? {} : { description: p.description }),
  };
}

/** The rule without its webhook secret (for API responses and webhook payloads). */
export function redactRule(rule: AlertRule): AlertRule {
  if (rule.webhook?.secret === undefined) return rule;
  return { ...rule, webhook: { url: rule.webhook.url } };
}
