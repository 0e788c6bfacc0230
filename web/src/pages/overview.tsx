/** Overview: per-model serving over the last hour (from GET /api/v1/overview), memory, alerts firing. */
import { useState } from 'preact/hooks';
import type { Whoami } from '../api';
import { bytes, ms, num, pct, when } from '../format';
import { href } from '../router';
import { Bars, Card, Code, Empty, LineChart, Picker, Show, Table, useApi } from '../ui';

export interface ModelSeries {
  model: string;
  t: number[];
  requests: number[];
  errors: number[];
  p50Ms: (number | null)[];
  p95Ms: (number | null)[];
  p99Ms: (number | null)[];
  queueMs: (number | null)[];
  computeMs: (number | null)[];
  totals: {
    requests: number;
    errors: number;
    clientErrors: number;
    cached: number;
    rate: number;
    errorRate: number | null;
    p50Ms: number | null;
    p95Ms: number | null;
    p99Ms: number | null;
    queueMs: number | null;
    computeMs: number | null;
  };
  batches: { bounds: number[]; counts: number[]; total: number; meanRows: number | null };
}
interface OverviewData {
  generatedAt: string;
  stepSeconds: number;
  windowSeconds: number;
  models: ModelSeries[];
  memory: { budgetBytes: number; usedBytes: number | null; resident: { model: string; version: string; state: string; bytes: number }[] };
}
interface AlertState {
  rule: string;
  state: string;
  since: string | null;
  value: number | null;
}

function ModelCharts({ s, step }: { s: ModelSeries; step: number }) {
  const rate = s.requests.map((r) => r / step);
  const errRate = s.requests.map((r, i) => (r > 0 ? (100 * (s.errors[i] ?? 0)) / r : null));
  const labels = [...s.batches.bounds.map(String), `>${s.batches.bounds[s.batches.bounds.length - 1]}`];
  return (
    <div class="grid2">
      <Card title={`Request rate — ${s.model}`}>
        <LineChart label={`Requests per second of ${s.model}`} x={s.t} series={[{ label: 'req/s', values: rate }]} />
      </Card>
      <Card title="Latency">
        <LineChart
          label={`Latency quantiles of ${s.model}`}
          unit=" ms"
          x={s.t}
          series={[
            { label: 'p50', values: s.p50Ms },
            { label: 'p95', values: s.p95Ms },
            { label: 'p99', values: s.p99Ms },
          ]}
        />
      </Card>
      <Card title="Queue vs compute (mean per request)">
        <LineChart
          label={`Queue and compute time of ${s.model}`}
          unit=" ms"
          x={s.t}
          series={[
            { label: 'queue', values: s.queueMs },
            { label: 'compute', values: s.computeMs },
          ]}
        />
      </Card>
      <Card title="Error rate">
        <LineChart label={`Error rate of ${s.model}`} unit=" %" x={s.t} series={[{ label: 'server errors', values: errRate }]} />
      </Card>
      <Card title={`Batch sizes (rows) — ${num(s.batches.total)} batches, mean ${num(s.batches.meanRows)}`}>
        {s.batches.total === 0 ? (
          <Empty title="No batches in the window." />
        ) : (
          <Bars label={`Batch size histogram of ${s.model}`} labels={labels} values={s.batches.counts} />
        )}
      </Card>
    </div>
  );
}

export function Overview({ who }: { who: Whoami }) {
  const ov = useApi<OverviewData>('/api/v1/overview', 10_000);
  const alerts = useApi<{ alerts: AlertState[] }>('/api/v1/alerts', 10_000);
  const [picked, setPicked] = useState('');
  return (
    <div>
      <h1>Overview</h1>
      <Show l={ov}>
        {(d) => {
          const busy = d.models.filter((m) => m.totals.requests > 0);
          const chosen = d.models.find((m) => m.model === picked) ?? busy[0] ?? d.models[0];
          const budget = d.memory.budgetBytes;
          const used = d.memory.usedBytes ?? d.memory.resident.reduce((a, r) => a + r.bytes, 0);
          return (
            <>
              <p class="muted">
                Last {Math.round(d.windowSeconds / 60)} minutes in {d.stepSeconds} s steps, kept in the server's memory (this replica); refreshed every 10 s.
              </p>
              <Card title="Models">
                {d.models.length === 0 ? (
                  <Empty title="No models are served yet.">
                    Register one on the <a href={href('models')}>Models</a> page (or <Code>switchyard models push model.onnx --name my-model</Code>), then send
                    requests to <Code>/v2/models/&lt;name&gt;/infer</Code>.
                  </Empty>
                ) : (
                  <Table
                    label="Per-model serving"
                    head={['Model', 'Requests', 'Req/s', 'p50', 'p95', 'p99', 'Error rate', 'Queue', 'Compute', 'Cached']}
                    rows={d.models.map((m) => [
                      <a href={href('models', m.model)}>{m.model}</a>,
                      num(m.totals.requests),
                      num(m.totals.rate, 4),
                      ms(m.totals.p50Ms),
                      ms(m.totals.p95Ms),
                      ms(m.totals.p99Ms),
                      pct(m.totals.errorRate, 2),
                      ms(m.totals.queueMs),
                      ms(m.totals.computeMs),
                      num(m.totals.cached),
                    ])}
                  />
                )}
                {d.models.length > 0 && busy.length === 0 ? (
                  <Empty title="No requests in the window.">
                    Send inference requests (V2 REST, gRPC or the OpenAI API) and the curves fill in within 10 s.
                  </Empty>
                ) : null}
              </Card>
              {chosen ? (
                <>
                  <Picker label="Charts for model" value={chosen.model} options={d.models.map((m) => m.model)} onChange={setPicked} />
                  <ModelCharts s={chosen} step={d.stepSeconds} />
                </>
              ) : null}
              <Card title="Memory">
                <p>
                  {budget > 0 ? (
                    <>
                      Resident {bytes(used)} of a {bytes(budget)} budget ({pct(used / budget)})
                    </>
                  ) : (
                    <>
                      Resident {bytes(used)}; no memory budget set (<Code>--memory-budget</Code>).
                    </>
                  )}
                  {d.memory.usedBytes === null ? <span class="muted"> — your models only</span> : null}
                </p>
                {budget > 0 ? <meter min={0} max={budget} value={used} high={budget * 0.9} aria-label="Memory used of the budget" /> : null}
                {d.memory.resident.length === 0 ? (
                  <Empty title="No model version is resident.">
                    Versions load at start (preload), on their first request (lazy), or with Load on the model's page.
                  </Empty>
                ) : (
                  <Table
                    label="Resident versions"
                    head={['Model', 'Version', 'State', 'Bytes']}
                    rows={d.memory.resident.map((r) => [r.model, r.version, r.state, bytes(r.bytes)])}
                  />
                )}
              </Card>
            </>
          );
        }}
      </Show>
      <Card title="Alerts">
        <Show l={alerts}>
          {(a) => {
            const firing = a.alerts.filter((x) => x.state !== 'inactive');
            if (a.alerts.length === 0)
              return (
                <Empty title="No alert rules.">
                  {who.kind === 'platform' || who.key?.scopes.includes('admin') ? (
                    <>
                      Create one with <Code>PUT /api/v1/alerts/rules/&lt;id&gt;</Code> (drift, latency_p99, error_rate…) or{' '}
                      <Code>switchyard monitor alerts</Code>.
                    </>
                  ) : (
                    'Ask an admin to set alert rules on your models.'
                  )}
                </Empty>
              );
            if (firing.length === 0) return <p class="ok">All {a.alerts.length} alert rules are inactive.</p>;
            return (
              <Table
                label="Alerts firing or pending"
                head={['Rule', 'State', 'Since', 'Value']}
                rows={firing.map((x) => [x.rule, <span class={`badge ${x.state}`}>{x.state}</span>, when(x.since), num(x.value, 4)])}
              />
            );
          }}
        </Show>
      </Card>
    </div>
  );
}
