/**
 * An experiment's results over time (GET /api/v1/experiments/:id/timeline): per arm the conversion rate or mean
 * of a metric, or each treatment arm's lift over the control with its 95% confidence interval, at evenly spaced
 * times since the experiment started; exportable as CSV.
 */
import { useState } from 'preact/hooks';
import { enc } from '../api';
import { csv, download } from '../format';
import { LineChart, Show, useApi } from '../ui';

interface Test {
  diff: number;
  ciLow: number;
  ciHigh: number;
  pValue: number;
}
interface Point {
  at: string;
  arms: { name: string; control: boolean; exposures: number; metrics: Record<string, { units: number; conversionRate: number | null; mean: number | null }> }[];
  comparisons: { arm: string; metric: string; conversion: Test | null; mean: Test | null }[];
  srm: { pValue: number; mismatch: boolean } | null;
}

const VIEWS = {
  rate: 'conversion rate per arm',
  mean: 'mean per unit per arm',
  lift: 'lift in conversion rate vs control (95% CI)',
  exposures: 'exposures per arm',
} as const;
type View = keyof typeof VIEWS;

function timelineCsv(id: string, points: Point[]): void {
  const rows = points.flatMap((p) =>
    p.arms.flatMap((a) => {
      const metrics = Object.keys(a.metrics);
      return (metrics.length === 0 ? [''] : metrics).map((m) => {
        const s = a.metrics[m];
        const c = p.comparisons.find((x) => x.arm === a.name && x.metric === m)?.conversion ?? null;
        return [
          p.at,
          a.name,
          a.exposures,
          m,
          s?.units ?? null,
          s?.conversionRate ?? null,
          s?.mean ?? null,
          c?.diff ?? null,
          c?.ciLow ?? null,
          c?.ciHigh ?? null,
          c?.pValue ?? null,
        ];
      });
    }),
  );
  download(
    `experiment-${id}-timeline.csv`,
    csv(['at', 'arm', 'exposures', 'metric', 'units', 'conversion_rate', 'mean', 'lift', 'ci_low', 'ci_high', 'p_value'], rows),
  );
}

export function ResultsOverTime({ id }: { id: string }) {
  const l = useApi<{ stepMs: number; points: Point[] }>(`/api/v1/experiments/${enc(id)}/timeline?points=24`, 60_000);
  const [metric, setMetric] = useState('');
  const [view, setView] = useState<View>('rate');
  return (
    <section aria-label={`Results over time of ${id}`}>
      <h3>Results over time</h3>
      <Show l={l}>
        {(d) => {
          const last = d.points[d.points.length - 1];
          const metrics = Object.keys(last?.arms[0]?.metrics ?? {});
          const m = metrics.includes(metric) ? metric : (metrics[0] ?? '');
          const x = d.points.map((p) => Date.parse(p.at));
          const arms = last?.arms ?? [];
          const series =
            view === 'lift'
              ? arms
                  .filter((a) => !a.control)
                  .flatMap((a) => {
                    const c = (p: Point): Test | null => p.comparisons.find((k) => k.arm === a.name && k.metric === m)?.conversion ?? null;
                    return [
                      { label: `${a.name} lift`, values: d.points.map((p) => c(p)?.diff ?? null) },
                      { label: `${a.name} CI low`, values: d.points.map((p) => c(p)?.ciLow ?? null) },
                      { label: `${a.name} CI high`, values: d.points.map((p) => c(p)?.ciHigh ?? null) },
                    ];
                  })
              : arms.map((a) => ({
                  label: a.name,
                  values: d.points.map((p) => {
                    const pa = p.arms.find((k) => k.name === a.name);
                    if (view === 'exposures') return pa?.exposures ?? null;
                    const s = pa?.metrics[m];
                    return (view === 'rate' ? s?.conversionRate : s?.mean) ?? null;
                  }),
                }));
          return (
            <>
              <div class="inline">
                <label class="picker">
                  Show{' '}
                  <select value={view} onChange={(e) => setView((e.target as HTMLSelectElement).value as View)}>
                    {(Object.keys(VIEWS) as View[]).map((v) => (
                      <option key={v} value={v}>
                        {VIEWS[v]}
                      </option>
                    ))}
                  </select>
                </label>
                {view !== 'exposures' && metrics.length > 0 ? (
                  <label class="picker">
                    Metric{' '}
                    <select value={m} onChange={(e) => setMetric((e.target as HTMLSelectElement).value)}>
                      {metrics.map((k) => (
                        <option key={k}>{k}</option>
                      ))}
                    </select>
                  </label>
                ) : null}
                <button type="button" onClick={() => timelineCsv(id, d.points)}>
                  Export over time (CSV)
                </button>
              </div>
              {view !== 'exposures' && metrics.length === 0 ? (
                <p class="muted">No outcome events yet: the chart fills as events arrive.</p>
              ) : (
                <LineChart label={`${view === 'exposures' ? VIEWS[view] : `${m}: ${VIEWS[view]}`} of ${id} over time`} x={x} series={series} />
              )}
              <p class="muted small">
                Cumulative at each time: units first exposed and outcome events up to then.
                {d.points.some((p) => p.srm?.mismatch) ? ' A sample ratio mismatch appears in the window.' : ''}
              </p>
            </>
          );
        }}
      </Show>
    </section>
  );
}
