/** Features: entities, feature views (and windowed views), feature services, and freshness per view (from /metrics). */
import { apiText, type Whoami } from '../api';
import { num } from '../format';
import { parseMetrics, sumBy } from '../metrics-text';
import { Card, Code, Empty, Show, Table, useApi } from '../ui';
import { useEffect, useState } from 'preact/hooks';

interface Rec<S> {
  kind: string;
  name: string;
  revision: number;
  spec: S;
  createdBy: string;
  createdAt: string;
}
interface Entity {
  description: string;
  joinKeys: { name: string; type: string }[];
}
interface View {
  kind?: 'view' | 'window';
  description: string;
  entities: string[];
  features?: { name: string; type: string }[];
  aggregations?: { name: string; fn: string; field?: string; window: string }[];
  ttlSeconds?: number;
  online?: boolean;
  offline?: boolean;
  source?: { type: string };
}
interface Service {
  description: string;
  features: { ref: string; input?: string }[];
  model?: string;
  version?: number;
  onMissing: string;
}

interface Freshness {
  pushed: number;
  stalenessMean: number | null;
  pushLagMean: number | null;
  reads: number;
  outsideMaxAge: number;
  streamLag: number | null;
}

function useFreshness(): { data: Map<string, Freshness> | null; error: string | null } {
  const [state, setState] = useState<{ data: Map<string, Freshness> | null; error: string | null }>({ data: null, error: null });
  useEffect(() => {
    apiText('GET', '/metrics').then(
      (text) => {
        const s = parseMetrics(text);
        const pushed = sumBy(s, 'switchyard_feature_rows_pushed_total', 'view', (l) => l['result'] === 'online_applied' || l['result'] === 'window_applied');
        const stSum = sumBy(s, 'switchyard_feature_staleness_seconds_sum', 'view');
        const stCount = sumBy(s, 'switchyard_feature_staleness_seconds_count', 'view');
        const lagSum = sumBy(s, 'switchyard_feature_push_lag_seconds_sum', 'view');
        const lagCount = sumBy(s, 'switchyard_feature_push_lag_seconds_count', 'view');
        const reads = sumBy(s, 'switchyard_feature_reads_total', 'view');
        const old = sumBy(s, 'switchyard_feature_reads_total', 'view', (l) => l['status'] === 'OUTSIDE_MAX_AGE');
        const stream = sumBy(s, 'switchyard_feature_stream_lag_seconds', 'view');
        const views = new Set([...pushed.keys(), ...stCount.keys(), ...reads.keys(), ...stream.keys()]);
        const out = new Map<string, Freshness>();
        const mean = (a: Map<string, number>, b: Map<string, number>, v: string): number | null => ((b.get(v) ?? 0) > 0 ? a.get(v)! / b.get(v)! : null);
        for (const v of views)
          out.set(v, {
            pushed: pushed.get(v) ?? 0,
            stalenessMean: mean(stSum, stCount, v),
            pushLagMean: mean(lagSum, lagCount, v),
            reads: reads.get(v) ?? 0,
            outsideMaxAge: old.get(v) ?? 0,
            streamLag: stream.get(v) ?? null,
          });
        setState({ data: out, error: null });
      },
      (e: unknown) => setState({ data: null, error: (e as Error).message }),
    );
  }, []);
  return state;
}

const secs = (v: number | null): string => (v === null ? '–' : v < 120 ? `${num(v, 1)} s` : v < 7200 ? `${num(v / 60, 1)} min` : `${num(v / 3600, 1)} h`);

export function Features(_: { who: Whoami }) {
  const entities = useApi<Rec<Entity>[]>('/api/v1/features/entities');
  const views = useApi<Rec<View>[]>('/api/v1/features/views');
  const services = useApi<Rec<Service>[]>('/api/v1/features/services');
  const fresh = useFreshness();
  return (
    <div>
      <h1>Features</h1>
      <Card title="Entities">
        <Show l={entities}>
          {(d) =>
            d.length === 0 ? (
              <Empty title="No entities defined.">
                Define what features are about: <Code>switchyard features apply features.yaml</Code> or <Code>PUT /api/v1/features/entities/user</Code> with{' '}
                <Code>{'{"joinKeys":[{"name":"user_id","type":"int64"}]}'}</Code>.
              </Empty>
            ) : (
              <Table
                label="Entities"
                head={['Entity', 'Join keys', 'Description', 'Revision']}
                rows={d.map((e) => [e.name, e.spec.joinKeys.map((k) => `${k.name}: ${k.type}`).join(', '), e.spec.description || '–', String(e.revision)])}
              />
            )
          }
        </Show>
      </Card>
      <Card title="Feature views and freshness">
        <Show l={views}>
          {(d) =>
            d.length === 0 ? (
              <Empty title="No feature views defined.">
                Add one (<Code>PUT /api/v1/features/views/&lt;name&gt;</Code>), then push rows with <Code>POST /api/v1/features/push</Code>.
              </Empty>
            ) : (
              <Table
                label="Feature views"
                head={[
                  'View',
                  'Kind',
                  'Entities',
                  'Features',
                  'Max age',
                  'Rows pushed',
                  'Push lag (mean)',
                  'Age when read (mean)',
                  'Reads too old',
                  'Stream lag',
                ]}
                rows={d.map((v) => {
                  const f = fresh.data?.get(v.name);
                  const feats =
                    v.spec.kind === 'window'
                      ? (v.spec.aggregations ?? []).map((a) => `${a.name} (${a.fn} ${a.window})`)
                      : (v.spec.features ?? []).map((x) => x.name);
                  return [
                    v.name,
                    v.spec.kind === 'window' ? `window${v.spec.source ? ` (${v.spec.source.type})` : ''}` : 'view',
                    v.spec.entities.join(', '),
                    <span class="small">
                      {feats.slice(0, 6).join(', ')}
                      {feats.length > 6 ? `, … (${feats.length})` : ''}
                    </span>,
                    v.spec.ttlSeconds ? secs(v.spec.ttlSeconds) : 'none',
                    f ? num(f.pushed) : '0',
                    secs(f?.pushLagMean ?? null),
                    secs(f?.stalenessMean ?? null),
                    f && f.reads > 0 ? `${num(f.outsideMaxAge)} of ${num(f.reads)}` : '–',
                    secs(f?.streamLag ?? null),
                  ];
                })}
              />
            )
          }
        </Show>
        {fresh.error ? (
          <p class="muted small">Freshness needs /metrics: {fresh.error}</p>
        ) : (
          <p class="muted small">
            Freshness since this server started (from /metrics): rows applied online, how late rows arrived, and how old values were when read.
          </p>
        )}
      </Card>
      <Card title="Feature services">
        <Show l={services}>
          {(d) =>
            d.length === 0 ? (
              <Empty title="No feature services.">
                A service lists features (<Code>view:feature</Code>) to join into a model's requests: <Code>PUT /api/v1/features/services/&lt;name&gt;</Code>.
              </Empty>
            ) : (
              <Table
                label="Feature services"
                head={['Service', 'Model', 'Features', 'On missing']}
                rows={d.map((s) => [
                  s.name,
                  s.spec.model ? `${s.spec.model}${s.spec.version ? ` v${s.spec.version}` : ''}` : '–',
                  <span class="small">{s.spec.features.map((f) => f.ref).join(', ')}</span>,
                  s.spec.onMissing,
                ])}
              />
            )
          }
        </Show>
      </Card>
    </div>
  );
}
