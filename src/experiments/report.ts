/**
 * @module
 * The experiment report's statistics from stored data: {@link aggregate} sums, in SQL, the exposures per arm and
 * the per-unit outcome sums per (arm, metric) as moments — optionally only what happened up to a time, which is
 * how the results-over-time series is computed (cumulatively, at each boundary) — and {@link summarize} turns
 * them into per-arm summaries, comparisons with the control and the sample-ratio-mismatch test.
 */
import { sql, type Kysely } from 'kysely';
import type { DB } from '../storage/index.js';
import { sampleRatioMismatch, twoProportionZTest, welchTTest, type MeanTest, type Moments, type ProportionTest, type SrmTest } from './stats.js';

/** What {@link summarize} needs of an experiment. */
export interface ExperimentShape {
  readonly arms: readonly { readonly name: string; readonly target: string; readonly weight: number }[];
  readonly control: string;
}

export interface MetricSummary {
  /** Exposed units of the arm with at least one event of the metric. */
  readonly units: number;
  /** units / exposures; null when the arm has no exposures. */
  readonly conversionRate: number | null;
  /** Mean of the per-unit sums over converting units; null when units is 0. */
  readonly mean: number | null;
  /** Sample standard deviation of the per-unit sums; null when units < 2. */
  readonly stddev: number | null;
  /** Sum of every event value of the arm's units. */
  readonly sum: number;
}

/** An arm's outcomes (the report's arm without its request counters, which are not kept per time). */
export interface ArmOutcomes {
  readonly name: string;
  readonly target: string;
  /** Normalised to sum 1. */
  readonly weight: number;
  readonly control: boolean;
  /** Distinct units first exposed to this arm. */
  readonly exposures: number;
  readonly metrics: Readonly<Record<string, MetricSummary>>;
}

export interface Comparison {
  readonly arm: string;
  readonly metric: string;
  readonly conversion: ProportionTest | null;
  readonly mean: MeanTest | null;
}

/** Stored exposures and outcome moments of one experiment. */
export interface Aggregates {
  /** Exposed units per arm. */
  readonly exposures: ReadonlyMap<string, number>;
  /** Per `arm + '\0' + metric`: count, sum and sum of squares of the per-unit sums. */
  readonly moments: ReadonlyMap<string, Moments>;
  /** Metric names seen, sorted. */
  readonly metrics: readonly string[];
}

const SEP = '\u0000';
const ZERO: Moments = { n: 0, sum: 0, sumSq: 0 };

/**
 * Exposures per arm and outcome moments per (arm, metric) of experiment `id`; with `until` (epoch ms), only units
 * first exposed and events that happened at or before it (events are attributed to the arm of their unit).
 */
export async function aggregate(db: Kysely<DB>, id: string, until: number | null = null): Promise<Aggregates> {
  let exposureQ = db
    .selectFrom('experiment_exposures')
    .select((eb) => ['arm', eb.fn.countAll<number | string>().as('n')])
    .where('experiment', '=', id);
  if (until !== null) exposureQ = exposureQ.where('first_at', '<=', until);
  const metricRows = await db
    .selectFrom((eb) => {
      let inner = eb
        .selectFrom('experiment_events as e')
        .innerJoin('experiment_exposures as x', (j) => j.onRef('x.experiment', '=', 'e.experiment').onRef('x.unit', '=', 'e.unit'))
        .select((s) => ['x.arm as arm', 'e.metric as metric', s.fn.sum<number>('e.value').as('v')])
        .where('e.experiment', '=', id);
      if (until !== null) inner = inner.where('e.at', '<=', until).where('x.first_at', '<=', until);
      return inner.groupBy(['x.arm', 'e.metric', 'e.unit']).as('per_unit');
    })
    .select((eb) => [
      'arm',
      'metric',
      eb.fn.countAll<number | string>().as('units'),
      eb.fn.sum<number | string>('v').as('total'),
      eb.fn.sum<number | string>(sql`v * v`).as('total_sq'),
    ])
    .groupBy(['arm', 'metric'])
    .execute();
  const exposureRows = await exposureQ.groupBy('arm').execute();
  const moments = new Map<string, Moments>();
  const names = new Set<string>();
  for (const r of metricRows) {
    moments.set(r.arm + SEP + r.metric, { n: Number(r.units), sum: Number(r.total), sumSq: Number(r.total_sq) });
    names.add(r.metric);
  }
  return { exposures: new Map(exposureRows.map((r) => [r.arm, Number(r.n)])), moments, metrics: [...names].sort() };
}

/** Sample standard deviation from moments; cancellation noise (all values equal) reads as 0. */
function stddevOf(n: number, sum: number, sumSq: number): number | null {
  if (n < 2) return null;
  const ss = sumSq - (sum * sum) / n;
  return ss <= 1e-13 * Math.abs(sumSq) ? 0 : Math.sqrt(ss / (n - 1));
}

/**
 * Per-arm outcomes, every non-control arm compared with the control on every metric seen (two-proportion z-test on
 * conversion, Welch's t-test on the per-unit mean), and SRM over exposures vs arm weights.
 */
export function summarize(experiment: ExperimentShape, agg: Aggregates): { arms: ArmOutcomes[]; comparisons: Comparison[]; srm: SrmTest | null } {
  const weightSum = experiment.arms.reduce((s, a) => s + a.weight, 0);
  const arms: ArmOutcomes[] = experiment.arms.map((a) => {
    const exp = agg.exposures.get(a.name) ?? 0;
    return {
      name: a.name,
      target: a.target,
      weight: weightSum > 0 ? a.weight / weightSum : 0,
      control: a.name === experiment.control,
      exposures: exp,
      metrics: Object.fromEntries(
        agg.metrics.map((m) => {
          const mo = agg.moments.get(a.name + SEP + m) ?? ZERO;
          const summary: MetricSummary = {
            units: mo.n,
            conversionRate: exp > 0 ? mo.n / exp : null,
            mean: mo.n > 0 ? mo.sum / mo.n : null,
            stddev: stddevOf(mo.n, mo.sum, mo.sumSq),
            sum: mo.sum,
          };
          return [m, summary];
        }),
      ),
    };
  });
  const comparisons: Comparison[] = [];
  const control = arms.find((a) => a.control);
  if (control !== undefined) {
    for (const a of arms) {
      if (a.control) continue;
      for (const m of agg.metrics) {
        const c = agg.moments.get(control.name + SEP + m) ?? ZERO;
        const t = agg.moments.get(a.name + SEP + m) ?? ZERO;
        comparisons.push({
          arm: a.name,
          metric: m,
          // Units are a subset of exposures; min() guards against rows of a unit exposed after its events were summed.
          conversion: twoProportionZTest(Math.min(c.n, control.exposures), control.exposures, Math.min(t.n, a.exposures), a.exposures),
          mean: welchTTest(c, t),
        });
      }
    }
  }
  return {
    arms,
    comparisons,
    srm: sampleRatioMismatch(
      arms.map((a) => a.exposures),
      experiment.arms.map((a) => a.weight),
    ),
  };
}
