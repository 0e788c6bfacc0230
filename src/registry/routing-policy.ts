/**
 * @module
 * A model's traffic policy: how requests that name no version are spread over its versions (weighted arms,
 * random or sticky by a hashed routing key), which candidates get shadow copies, where a failing request
 * falls back to, when a version's circuit opens, and whether results are cached. Set through the admin API
 * and CLI, stored on the registered model and versioned in the registry's event log.
 */
import { z } from 'zod';
import { err } from '../errors.js';
import { MODEL_NAME } from './names.js';

/** A version of the same model: a number (`"3"`) or an alias (`"production"`). */
const VERSION_REF = /^(?:[1-9][0-9]{0,15}|[A-Za-z][A-Za-z0-9_.-]{0,63})$/;
export const ARM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Where a routing key comes from: a request header or a V2 request parameter. */
export const KEY_SOURCE = /^(?:header|parameter):[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const versionRef = z.string().regex(VERSION_REF, 'a version number or an alias');

const arm = z.strictObject({
  /** Arm name: reported in responses, metrics and experiment reports. */
  name: z.string().regex(ARM_NAME, 'letters, digits, _ . - (at most 64)'),
  /** Version number or alias of this model. */
  target: versionRef,
  /** Relative weight; weights are normalised to sum to 1. */
  weight: z.number().min(0).max(1_000_000),
});

const sticky = z.strictObject({
  /** `header:<name>` (e.g. `header:x-user-id`) or `parameter:<name>` (a V2 request parameter). */
  key: z.string().regex(KEY_SOURCE, '"header:<name>" or "parameter:<name>"'),
  /** Experiment seed hashed with the key (GrowthBook's `seed`, else its experiment key). Default: the model name. */
  seed: z.string().min(1).max(256).optional(),
  /** GrowthBook hash version: 2 (default) or 1 (legacy). */
  hashVersion: z.union([z.literal(1), z.literal(2)]).default(2),
  /** Share of keyed traffic included in the split (GrowthBook coverage); the rest is served by the first arm. Default 1. */
  coverage: z.number().min(0).max(1).default(1),
  /** GrowthBook namespace `[id, start, end]`: keys hashing outside [start, end) are served by the first arm. */
  namespace: z.tuple([z.string().min(1), z.number().min(0).max(1), z.number().min(0).max(1)]).optional(),
});

const shadow = z.strictObject({
  /** Version number or alias of this model that receives the copies. */
  target: versionRef,
  /** Share of routed requests copied, 0..1. */
  fraction: z.number().min(0).max(1),
  /** A copy not answered within this many ms counts as a shadow timeout. Default 10000. */
  timeoutMs: z.number().int().min(1).max(600_000).default(10_000),
});

const fallbackTarget = z.strictObject({
  /** Another model; default this one. */
  model: z.string().regex(MODEL_NAME).optional(),
  /** Version number or alias; default that model's default route. */
  version: versionRef.optional(),
});

const circuitBreaker = z.strictObject({
  /** Opens when the error share over the window reaches this, 0..1. Default 0.5. */
  errorRate: z.number().gt(0).max(1).default(0.5),
  /** ... and the window holds at least this many requests. Default 20. */
  minRequests: z.number().int().min(1).default(20),
  /** Sliding window, ms. Default 10000. */
  windowMs: z.number().int().min(100).max(3_600_000).default(10_000),
  /** Open this long, then let one probe request through (half-open), ms. Default 30000. */
  cooldownMs: z.number().int().min(10).max(3_600_000).default(30_000),
});

const cache = z.strictObject({
  /** How long a cached result stays valid, ms. Default 60000. */
  ttlMs: z
    .number()
    .int()
    .min(1)
    .max(7 * 86_400_000)
    .default(60_000),
});

export const routingPolicySchema = z.strictObject({
  /** Weighted split over versions (canary 5% → 50% → 100%, or A/B arms). None: the model's default route. */
  arms: z.array(arm).min(1).max(16).optional(),
  /** Sticky assignment by routing key; without it the split is random per request. */
  sticky: sticky.optional(),
  /** Asynchronous copies to candidate versions; never affect the caller. */
  shadow: z.array(shadow).max(4).optional(),
  /** Served in order when the routed version fails, times out or has an open circuit. */
  fallback: z.array(fallbackTarget).max(8).optional(),
  /** Per-attempt timeout before falling back, ms. Default: none (the request's own timeout applies). */
  timeoutMs: z.number().int().min(1).max(600_000).optional(),
  /** Per-version circuit breaker; absent = none. */
  circuitBreaker: circuitBreaker.optional(),
  /** Cache results per (tenant, version, input bytes); absent = no caching. */
  cache: cache.optional(),
});

export type RoutingPolicyInput = z.input<typeof routingPolicySchema>;
export type RoutingPolicy = z.output<typeof routingPolicySchema>;
export type Arm = RoutingPolicy extends { arms?: (infer A)[] } ? A : never;
export type ShadowSpec = NonNullable<RoutingPolicy['shadow']>[number];
export type FallbackTarget = NonNullable<RoutingPolicy['fallback']>[number];
export type CircuitBreakerSpec = NonNullable<RoutingPolicy['circuitBreaker']>;
export type CacheSpec = NonNullable<RoutingPolicy['cache']>;

/** Validate a policy (with defaults filled in); a 400 naming every problem otherwise. */
export function parseRoutingPolicy(v: unknown): RoutingPolicy {
  const r = routingPolicySchema.safeParse(v);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(policy)'}: ${i.message}`);
    throw err('SY_ERR_BAD_REQUEST', `invalid routing policy: ${issues.join('; ')}`);
  }
  const p = r.data;
  if (p.arms !== undefined) {
    const names = new Set<string>();
    for (const a of p.arms) {
      if (names.has(a.name)) throw err('SY_ERR_BAD_REQUEST', `invalid routing policy: arms: duplicate arm name "${a.name}"`);
      names.add(a.name);
    }
    if (!p.arms.some((a) => a.weight > 0)) throw err('SY_ERR_BAD_REQUEST', 'invalid routing policy: arms: at least one arm needs a weight above 0');
  }
  if (p.sticky !== undefined && p.arms === undefined) throw err('SY_ERR_BAD_REQUEST', 'invalid routing policy: sticky: needs arms to split over');
  const ns = p.sticky?.namespace;
  if (ns !== undefined && ns[1] >= ns[2]) throw err('SY_ERR_BAD_REQUEST', 'invalid routing policy: sticky.namespace: start must be below end');
  return p;
}
