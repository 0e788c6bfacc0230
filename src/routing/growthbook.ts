/**
 * @module
 * GrowthBook's deterministic assignment functions (SDK spec 0.8), so that a sticky A/B split made here agrees
 * with GrowthBook SDKs running in front-end code for the same user, experiment seed and weights:
 * FNV-1a 32-bit hashing (hash versions 1 and 2), bucket ranges from weights and coverage, choosing a
 * variation, and namespaces (mutually exclusive experiments). Written from the SDK specification; checked
 * against its published test vectors (../shared/conformance/growthbook-cases.json).
 */

/** FNV-1a, 32 bits, over UTF-16 code units (as the JavaScript SDK hashes strings). */
export function fnv32a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A number in [0, 1) from `seed` and `value`: version 2 (current) hashes twice and has 4-digit precision;
 * version 1 (legacy) hashes `value + seed` once with 3 digits. Any other version: null.
 */
export function hash(seed: string, value: string, version: number): number | null {
  if (version === 2) return (fnv32a(String(fnv32a(seed + value))) % 10_000) / 10_000;
  if (version === 1) return (fnv32a(value + seed) % 1000) / 1000;
  return null;
}

/** `n` equal weights summing to 1 (none for n ≤ 0). */
export function getEqualWeights(n: number): number[] {
  if (n <= 0) return [];
  return new Array<number>(n).fill(1 / n);
}

export type BucketRange = [number, number];

/**
 * The hash interval of each variation: consecutive slices of [0, 1) sized by `weights`, each cut to
 * `coverage` of its slice (so lowering coverage never moves a user to another variation). Coverage is clamped
 * to [0, 1]; weights of the wrong length or not summing to 1 (±0.01) fall back to equal weights.
 */
export function getBucketRange(numVariations: number, coverage: number, weights?: readonly number[] | null): BucketRange[] {
  const c = coverage < 0 ? 0 : coverage > 1 ? 1 : coverage;
  const equal = getEqualWeights(numVariations);
  let w: readonly number[] = weights ?? equal;
  if (w.length !== numVariations) w = equal;
  const total = w.reduce((a, b) => a + b, 0);
  if (total < 0.99 || total > 1.01) w = equal;
  let cumulative = 0;
  return w.map((x) => {
    const start = cumulative;
    cumulative += x;
    return [start, start + c * x];
  });
}

/** The variation whose range holds `n` (start inclusive, end exclusive), or -1 when none does. */
export function chooseVariation(n: number, ranges: readonly BucketRange[]): number {
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!;
    if (n >= r[0] && n < r[1]) return i;
  }
  return -1;
}

/** GrowthBook namespace: [id, start, end]; a user is in it when hash("__" + id, value, v1) ∈ [start, end). */
export type Namespace = readonly [string, number, number];

export function inNamespace(hashValue: string, namespace: Namespace): boolean {
  const n = hash(`__${namespace[0]}`, hashValue, 1);
  return n !== null && n >= namespace[1] && n < namespace[2];
}
