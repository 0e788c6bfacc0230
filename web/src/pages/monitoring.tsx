/** Monitoring: drift per feature (now, over time, and the reference-vs-current histogram), data quality, and the prediction log with filters. */
import { useState } from 'preact/hooks';
import { apiText, enc, type Model, type Whoami } from '../api';
import { download, num, pct, when } from '../format';
import { go, href } from '../router';
import { Bars, Card, Code, Empty, LineChart, Picker, Show, Table, useApi } from '../ui';

interface FeatureDrift {
  name: string;
  kind: string;
  source: string;
  count: number;
  psi: number | null;
  js: number | null;
  ks: number | null;
  ksPValue: number | null;
  drifted: boolean;
  quality: { missingRate: number | null; nanRate: number | null; outOfRangeRate: number | null };
}
interface DriftReport {
  windowStart: string;
  windowEnd: string;
  rows: number;
  features: FeatureDrift[];
  driftedShare: number | null;
  datasetDrift: boolean;
  quality: { shapeViolations: number; typeViolations: number };
}
interface TensorJson {
  name: string;
  datatype: string;
  shape: number[];
  data: unknown[];
}
interface Prediction {
  at: string;
  model: string;
  version: number;
  tenant: string;
  arm: string | null;
  requestId: string;
  latencyMs: number;
  inputs: TensorJson[];
  outputs: TensorJson[];
}

const METRICS = ['psi', 'js', 'ks'] as const;

type FeatureBins = { name: string; source: string; reference: number[]; current: number[] } & (
  { kind: 'numeric'; edges: number[] } | { kind: 'categorical'; categories: string[] }
);

/** Bin labels: numeric bins by their edges (the first and last open-ended), categorical ones by category. */
function binLabels(f: FeatureBins): string[] {
  if (f.kind === 'categorical') return f.categories;
  const e = f.edges.map((x) => num(x, 3));
  if (e.length === 0) return ['all'];
  return [`< ${e[0]}`, ...e.slice(1).map((x, i) => `${e[i]}–${x}`), `≥ ${e[e.length - 1]}`];
}

const shares = (c: number[]): number[] => {
  const n = c.reduce((s, x) => s + x, 0);
  return c.map((x) => (n > 0 ? Math.round((x / n) * 10_000) / 10_000 : 0));
};

/** Reference vs current-window histogram of one feature (GET …/drift/bins), as shares of each side's values. */
function Histogram({ model, version, features }: { model: string; version: number; features: FeatureDrift[] }) {
  const first = features.find((f) => f.drifted)?.name ?? features[0]?.name ?? '';
  const [feature, setFeature] = useState(first);
  const l = useApi<{ bins: { version: number; rows: number; features: FeatureBins[] }[] }>(
    feature ? `/api/v1/models/${enc(model)}/drift/bins?version=${version}&feature=${enc(feature)}` : null,
    30_000,
  );
  return (
    <div class="histogram">
      <Picker label="Histogram of feature" value={feature} options={features.map((f) => f.name)} onChange={setFeature} />
      {feature ? (
        <Show l={l}>
          {(d) => {
            const f = d.bins[0]?.features[0];
            if (!f) return <Empty title={`No bins for ${feature}.`} />;
            const cur = f.current.reduce((s, x) => s + x, 0);
            return (
              <>
                <Bars
                  label={`Reference vs current histogram of ${f.name}, version ${version}`}
                  labels={binLabels(f)}
                  values={shares(f.reference)}
                  compare={shares(f.current)}
                  names={[`reference (${num(f.reference.reduce((s, x) => s + x, 0))} values)`, `current window (${num(cur)} values)`]}
                />
                {cur === 0 ? <p class="muted small">No values of {f.name} in the window yet: the current side fills as the version serves requests.</p> : null}
              </>
            );
          }}
        </Show>
      ) : null}
    </div>
  );
}

function History({ model, version }: { model: string; version: number }) {
  const l = useApi<{ history: { at: string; version: number; report: DriftReport }[] }>(
    `/api/v1/models/${enc(model)}/drift/history?version=${version}&limit=200`,
  );
  const [metric, setMetric] = useState<(typeof METRICS)[number]>('psi');
  return (
    <Show l={l}>
      {(d) => {
        const h = [...d.history].reverse();
        if (h.length < 1)
          return <Empty title="No drift history yet.">Reports are computed every --drift-eval-ms (1 min by default) while the version is served.</Empty>;
        const names = (h[h.length - 1]?.report.features ?? []).slice(0, 8).map((f) => f.name);
        return (
          <>
            <label class="picker">
              Metric{' '}
              <select value={metric} onChange={(e) => setMetric((e.target as HTMLSelectElement).value as typeof metric)}>
                {METRICS.map((m) => (
                  <option key={m}>{m}</option>
                ))}
              </select>
            </label>
            <LineChart
              label={`${metric} over time`}
              x={h.map((r) => Date.parse(r.at))}
              series={names.map((n) => ({ label: n, values: h.map((r) => r.report.features.find((f) => f.name === n)?.[metric] ?? null) }))}
            />
            {names.length < (h[h.length - 1]?.report.features.length ?? 0) ? (
              <p class="muted small">The first 8 features are drawn; the table above lists all.</p>
            ) : null}
          </>
        );
      }}
    </Show>
  );
}

function Drift({ model }: { model: string }) {
  const l = useApi<{ reports: { version: number; report: DriftReport }[] }>(`/api/v1/models/${enc(model)}/drift`, 30_000);
  return (
    <Show l={l}>
      {(d) =>
        d.reports.length === 0 ? (
          <Card title="Drift">
            <Empty title="No version of this model has a reference profile.">
              Set one from a dataset: <Code>switchyard monitor profile {model} 1 --data train.csv</Code>, or from logged traffic (
              <Code>POST /api/v1/models/{model}/versions/1/profile</Code> with <Code>{'{"source":"log"}'}</Code>).
            </Empty>
          </Card>
        ) : (
          <>
            {d.reports.map(({ version, report: r }) => (
              <Card key={version} title={`Drift — version ${version}${r.datasetDrift ? ' — DATASET DRIFT' : ''}`}>
                <p class="muted">
                  {num(r.rows)} rows from {when(r.windowStart)} to {when(r.windowEnd)} · drifted features {pct(r.driftedShare)} · shape violations{' '}
                  {num(r.quality.shapeViolations)} · type violations {num(r.quality.typeViolations)}
                </p>
                <Table
                  label={`Features of version ${version}`}
                  head={['Feature', 'Kind', 'Values', 'PSI', 'JS', 'KS', 'KS p', 'Drifted', 'Missing', 'NaN', 'Out of range']}
                  rows={r.features.map((f) => [
                    f.name,
                    `${f.kind} ${f.source}`,
                    num(f.count),
                    num(f.psi, 4),
                    num(f.js, 4),
                    num(f.ks, 4),
                    num(f.ksPValue, 4),
                    f.drifted ? <span class="badge firing">drifted</span> : 'no',
                    pct(f.quality.missingRate),
                    pct(f.quality.nanRate),
                    pct(f.quality.outOfRangeRate),
                  ])}
                />
                <Histogram model={model} version={version} features={r.features} />
                <History model={model} version={version} />
              </Card>
            ))}
          </>
        )
      }
    </Show>
  );
}

function preview(ts: TensorJson[]): string {
  return ts
    .map(
      (t) =>
        `${t.name}[${t.shape.join(',')}] ${t.data
          .slice(0, 4)
          .map((v) => (typeof v === 'number' ? num(v, 4) : String(v)))
          .join(', ')}${t.data.length > 4 ? ', …' : ''}`,
    )
    .join('; ');
}

function Predictions({ model }: { model: string }) {
  const [version, setVersion] = useState('');
  const [since, setSince] = useState('');
  const [limit, setLimit] = useState('50');
  const [query, setQuery] = useState(`model=${enc(model)}&limit=50`);
  const l = useApi<{ predictions: Prediction[] }>(`/api/v1/predictions?${query}`);
  const apply = (e: Event): void => {
    e.preventDefault();
    const q = [`model=${enc(model)}`, `limit=${enc(limit || '50')}`];
    if (version) q.push(`version=${enc(version)}`);
    if (since) q.push(`since=${enc(new Date(since).toISOString())}`);
    setQuery(q.join('&'));
  };
  return (
    <Card
      title="Prediction log"
      actions={
        <button
          type="button"
          onClick={() => void apiText('GET', `/api/v1/predictions?${query}&format=csv`).then((t) => download(`predictions-${model}.csv`, t))}
        >
          Export CSV
        </button>
      }
    >
      <form class="inline" onSubmit={apply} aria-label="Prediction filters">
        <label>
          Version <input type="number" min={1} size={4} value={version} onInput={(e) => setVersion((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Since <input type="datetime-local" value={since} onInput={(e) => setSince((e.target as HTMLInputElement).value)} />
        </label>
        <label>
          Limit <input type="number" min={1} max={1000} size={5} value={limit} onInput={(e) => setLimit((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Filter</button>
      </form>
      <Show l={l}>
        {(d) =>
          d.predictions.length === 0 ? (
            <Empty title="No logged predictions match.">The log samples --monitor-sample-rate of requests (1% by default); raise it to see more.</Empty>
          ) : (
            <Table
              label="Predictions"
              head={['Time', 'Version', 'Tenant', 'Arm', 'Latency', 'Inputs', 'Outputs', 'Request id']}
              rows={d.predictions.map((p) => [
                when(p.at),
                String(p.version),
                p.tenant || '–',
                p.arm ?? '–',
                `${num(p.latencyMs, 3)} ms`,
                <span class="small">{preview(p.inputs)}</span>,
                <span class="small">{preview(p.outputs)}</span>,
                <span class="small">{p.requestId}</span>,
              ])}
            />
          )
        }
      </Show>
    </Card>
  );
}

export function Monitoring({ args }: { who: Whoami; args: string[] }) {
  const models = useApi<{ models: Model[] }>('/api/v1/models');
  const name = args[0] ?? '';
  return (
    <div>
      <h1>Monitoring</h1>
      <Show l={models}>
        {(d) =>
          d.models.length === 0 ? (
            <Empty title="No models registered.">
              Register one on the <a href={href('models')}>Models</a> page first.
            </Empty>
          ) : (
            <Picker label="Model" value={name} options={d.models.map((m) => m.name)} onChange={(v) => go('monitoring', v)} />
          )
        }
      </Show>
      {name ? (
        <div key={name}>
          <Drift model={name} />
          <Predictions model={name} />
        </div>
      ) : (
        <p class="muted">Choose a model to see its drift, data quality and logged predictions.</p>
      )}
    </div>
  );
}
