/** Traffic: a model's routing policy (arms, shadows, fallback, breakers, cache), canary weights, experiments (now and over time). */
import { useEffect, useState } from 'preact/hooks';
import { api, enc, type Model, type Whoami } from '../api';
import { csv, download, num, pct, when } from '../format';
import { go, href } from '../router';
import { Card, Code, ConfirmButton, Empty, Picker, Show, Table, useApi } from '../ui';
import { ResultsOverTime } from './experiment-timeline';
import type { ModelSeries } from './overview';

interface Arm {
  name: string;
  target: string;
  weight: number;
}
interface Policy {
  arms?: Arm[];
  shadow?: { target: string; fraction: number }[];
  fallback?: { model?: string; version?: string }[];
  timeoutMs?: number;
  circuitBreaker?: Record<string, number>;
  cache?: { ttlMs: number };
  sticky?: Record<string, unknown>;
}
interface Routing {
  model: string;
  revision: number;
  policy: Policy | null;
  circuits: { version: string; state: string }[];
  shadows: (Record<string, number | null> & { target: string })[];
}
interface Experiment {
  id: string;
  model: string;
  status: string;
  description: string;
  control: string;
  createdAt: string;
  stoppedAt?: string | null;
  stopReason?: string | null;
}
interface MetricSummary {
  units: number;
  conversionRate: number | null;
  mean: number | null;
  stddev: number | null;
  sum: number;
}
interface Test {
  diff: number;
  ciLow: number;
  ciHigh: number;
  pValue: number;
  rateA?: number;
  rateB?: number;
  meanA?: number;
  meanB?: number;
}
interface Report {
  generatedAt: string;
  arms: {
    name: string;
    target: string;
    weight: number;
    control: boolean;
    exposures: number;
    requests: { hash: number; random: number };
    metrics: Record<string, MetricSummary>;
  }[];
  comparisons: { arm: string; metric: string; conversion: Test | null; mean: Test | null }[];
  srm: { chiSquare: number; pValue: number; mismatch: boolean } | null;
  unattributedEvents: number;
  guardrails: unknown;
}

function Weights({ r, done }: { r: Routing; done: () => void }) {
  const arms = r.policy?.arms ?? [];
  const [w, setW] = useState(arms.map((a) => String(a.weight)));
  const [reason, setReason] = useState('');
  useEffect(() => setW(arms.map((a) => String(a.weight))), [r.revision]);
  const next = arms.map((a, i) => ({ ...a, weight: Number(w[i]) }));
  const total = next.reduce((s, a) => s + (Number.isFinite(a.weight) ? a.weight : 0), 0);
  const changed = next.some((a, i) => a.weight !== arms[i]?.weight);
  return (
    <div>
      <Table
        label="Arms"
        head={['Arm', 'Target version', 'Weight', 'Share']}
        rows={arms.map((a, i) => [
          a.name,
          a.target,
          <input
            type="number"
            min={0}
            step="any"
            size={6}
            value={w[i]}
            aria-label={`Weight of arm ${a.name}`}
            onInput={(e) => setW(w.map((x, j) => (j === i ? (e.target as HTMLInputElement).value : x)))}
          />,
          total > 0 ? pct(next[i]!.weight / total) : '–',
        ])}
      />
      <div class="inline">
        <label>
          Reason{' '}
          <input value={reason} placeholder="canary 10%" onInput={(e) => setReason((e.target as HTMLInputElement).value)} aria-label="Reason for the change" />
        </label>
        <ConfirmButton
          label="Apply weights"
          title="Change traffic split"
          confirmLabel="Apply"
          message={
            <>
              <p>
                New split for <b>{r.model}</b> (a new policy revision, from the next request):
              </p>
              <ul>
                {next.map((a) => (
                  <li key={a.name}>
                    {a.name} → v{a.target}: {total > 0 ? pct(a.weight / total) : '–'}
                  </li>
                ))}
              </ul>
            </>
          }
          action={async () => {
            if (!changed) throw new Error('The weights are unchanged.');
            if (next.some((a) => !Number.isFinite(a.weight) || a.weight < 0) || total <= 0)
              throw new Error('Weights must be numbers ≥ 0, at least one above 0.');
            await api('PUT', `/api/v1/models/${enc(r.model)}/routing${reason ? `?reason=${enc(reason)}` : ''}`, { ...r.policy, arms: next });
          }}
          done={done}
        />
      </div>
    </div>
  );
}

function reportCsv(id: string, rep: Report): void {
  const metrics = [...new Set(rep.arms.flatMap((a) => Object.keys(a.metrics)))];
  const rows = rep.arms.flatMap((a) =>
    (metrics.length === 0 ? [''] : metrics).map((m) => {
      const s = a.metrics[m];
      const c = rep.comparisons.find((x) => x.arm === a.name && x.metric === m);
      const t = c?.conversion ?? null;
      return [
        a.name,
        a.target,
        a.weight,
        a.exposures,
        a.requests.hash,
        a.requests.random,
        m,
        s?.units ?? null,
        s?.conversionRate ?? null,
        s?.mean ?? null,
        s?.sum ?? null,
        t?.diff ?? null,
        t?.ciLow ?? null,
        t?.ciHigh ?? null,
        t?.pValue ?? null,
      ];
    }),
  );
  download(
    `experiment-${id}.csv`,
    csv(
      [
        'arm',
        'target',
        'weight',
        'exposures',
        'requests_hash',
        'requests_random',
        'metric',
        'units',
        'conversion_rate',
        'mean',
        'sum',
        'lift',
        'ci_low',
        'ci_high',
        'p_value',
      ],
      rows,
    ),
  );
}

function ExperimentReport({ e }: { e: Experiment }) {
  const l = useApi<Report>(`/api/v1/experiments/${enc(e.id)}/report`, 15_000);
  return (
    <Card
      title={`Experiment ${e.id} — ${e.status}`}
      actions={
        l.data ? (
          <button type="button" onClick={() => reportCsv(e.id, l.data!)}>
            Export CSV
          </button>
        ) : undefined
      }
    >
      <p class="muted">
        {e.description} · control {e.control} · started {when(e.createdAt)}
        {e.stopReason ? ` · ${e.stopReason}` : ''}
      </p>
      <Show l={l}>
        {(rep) => (
          <>
            {rep.srm?.mismatch ? (
              <div class="error" role="alert">
                Sample ratio mismatch (p = {num(rep.srm.pValue, 6)}): exposures do not match the weights — do not trust the comparisons.
              </div>
            ) : null}
            <Table
              label={`Arms of ${e.id}`}
              head={[
                'Arm',
                'Target',
                'Weight',
                'Exposures',
                'Requests (hash / random)',
                ...Object.keys(rep.arms[0]?.metrics ?? {}).map((m) => `${m}: rate · mean`),
              ]}
              rows={rep.arms.map((a) => [
                a.name + (a.control ? ' (control)' : ''),
                a.target,
                pct(a.weight),
                num(a.exposures),
                `${num(a.requests.hash)} / ${num(a.requests.random)}`,
                ...Object.values(a.metrics).map((s) => `${pct(s.conversionRate, 2)} · ${num(s.mean, 3)}`),
              ])}
            />
            {rep.comparisons.length === 0 ? (
              <Empty title="No outcome events yet.">
                Post them: <Code>POST /api/v1/experiments/{e.id}/events</Code> with <Code>{'{"unit","metric","value"}'}</Code>.
              </Empty>
            ) : (
              <Table
                label={`Comparisons of ${e.id}`}
                head={['Arm', 'Metric', 'Lift (rate)', '95% CI', 'p', 'Mean diff', '95% CI', 'p']}
                rows={rep.comparisons.map((c) => [
                  c.arm,
                  c.metric,
                  c.conversion ? pct(c.conversion.diff, 2) : '–',
                  c.conversion ? `${pct(c.conversion.ciLow, 2)} … ${pct(c.conversion.ciHigh, 2)}` : '–',
                  num(c.conversion?.pValue, 4),
                  c.mean ? num(c.mean.diff, 3) : '–',
                  c.mean ? `${num(c.mean.ciLow, 3)} … ${num(c.mean.ciHigh, 3)}` : '–',
                  num(c.mean?.pValue, 4),
                ])}
              />
            )}
            <ResultsOverTime id={e.id} />
            <details>
              <summary>Guardrails (this replica)</summary>
              <pre>{JSON.stringify(rep.guardrails, null, 2)}</pre>
            </details>
          </>
        )}
      </Show>
    </Card>
  );
}

function ModelTraffic({ name, canChange }: { name: string; canChange: boolean }) {
  const l = useApi<Routing>(`/api/v1/models/${enc(name)}/routing`, 15_000);
  const exps = useApi<Experiment[]>(`/api/v1/experiments?model=${enc(name)}`);
  const ov = useApi<{ models: ModelSeries[] }>('/api/v1/overview', 15_000);
  const series = ov.data?.models.find((m) => m.model === name);
  return (
    <div>
      <Show l={l}>
        {(r) => (
          <Card title={`Routing policy — revision ${r.revision}`}>
            {r.policy === null || !r.policy.arms?.length ? (
              <Empty title="No traffic policy: requests take the default route (the production alias, else the newest version).">
                Start a canary: <Code>switchyard routing canary {name} &lt;version&gt; 5</Code>, or <Code>PUT /api/v1/models/{name}/routing</Code>.
              </Empty>
            ) : canChange ? (
              <Weights r={r} done={l.reload} />
            ) : (
              <Table label="Arms" head={['Arm', 'Target', 'Weight']} rows={r.policy.arms.map((a) => [a.name, a.target, num(a.weight)])} />
            )}
            {r.policy ? (
              <dl class="facts">
                <dt>Sticky</dt>
                <dd>{r.policy.sticky ? JSON.stringify(r.policy.sticky) : 'no (random per request)'}</dd>
                <dt>Shadows</dt>
                <dd>{r.policy.shadow?.length ? r.policy.shadow.map((s) => `v${s.target} (${pct(s.fraction)})`).join(', ') : 'none'}</dd>
                <dt>Fallback</dt>
                <dd>{r.policy.fallback?.length ? r.policy.fallback.map((f) => `${f.model ?? name}:${f.version ?? 'default'}`).join(' → ') : 'none'}</dd>
                <dt>Timeout</dt>
                <dd>{r.policy.timeoutMs ? `${r.policy.timeoutMs} ms` : 'none'}</dd>
                <dt>Circuit breaker</dt>
                <dd>{r.policy.circuitBreaker ? JSON.stringify(r.policy.circuitBreaker) : 'off'}</dd>
                <dt>Result cache</dt>
                <dd>
                  {r.policy.cache
                    ? `ttl ${r.policy.cache.ttlMs} ms${series && series.totals.requests > 0 ? `, hit rate ${pct(series.totals.cached / series.totals.requests)} (last hour)` : ''}`
                    : 'off'}
                </dd>
              </dl>
            ) : null}
            {r.circuits.length ? (
              <Table
                label="Circuit breakers"
                head={['Version', 'State']}
                rows={r.circuits.map((c) => [c.version, <span class={`badge ${c.state}`}>{c.state}</span>])}
              />
            ) : null}
            {r.shadows.length ? (
              <Table
                label="Shadow statistics"
                head={['Target', 'Copies', 'Errors', 'Dropped', 'Agreement', 'Max |diff|', 'p99']}
                rows={r.shadows.map((s) => [
                  s.target,
                  num(s['copies']),
                  num(s['errors']),
                  num(s['dropped']),
                  pct(s['agreement']),
                  num(s['maxAbsDiff'], 6),
                  num(s['p99Ms']),
                ])}
              />
            ) : null}
          </Card>
        )}
      </Show>
      <Show l={exps}>
        {(d) =>
          d.length === 0 ? (
            <Card title="Experiments">
              <Empty title="No experiments on this model.">
                With a policy of two or more sticky arms:{' '}
                <Code>
                  switchyard experiments create {name} --id {name}-test
                </Code>
                .
              </Empty>
            </Card>
          ) : (
            <>
              {d.map((e) => (
                <ExperimentReport key={e.id} e={e} />
              ))}
            </>
          )
        }
      </Show>
    </div>
  );
}

export function Traffic({ who, args }: { who: Whoami; args: string[] }) {
  const models = useApi<{ models: Model[] }>('/api/v1/models');
  const name = args[0] ?? '';
  const canChange = who.kind === 'platform' || (who.key?.scopes.includes('admin') ?? false);
  return (
    <div>
      <h1>Traffic</h1>
      <Show l={models}>
        {(d) =>
          d.models.length === 0 ? (
            <Empty title="No models registered.">
              Register one on the <a href={href('models')}>Models</a> page first.
            </Empty>
          ) : (
            <Picker label="Model" value={name} options={d.models.map((m) => m.name)} onChange={(v) => go('traffic', v)} />
          )
        }
      </Show>
      {name ? <ModelTraffic key={name} name={name} canChange={canChange} /> : <p class="muted">Choose a model to see its traffic policy and experiments.</p>}
    </div>
  );
}
