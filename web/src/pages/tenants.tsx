/** Tenants: tenants and their limits, API keys (create, revoke), usage over time with several models, tenants or API keys overlaid. */
import { useState } from 'preact/hooks';
import { api, enc, type Whoami } from '../api';
import { num, when } from '../format';
import { go, href } from '../router';
import { Card, Code, ConfirmButton, Empty, ErrorBox, LineChart, Picker, Show, Table, useApi } from '../ui';

interface Tenant {
  name: string;
  description: string;
  tier: string;
  weight: number;
  effectiveLimits: Record<string, unknown>;
  disabled: boolean;
  createdAt: string;
}
interface Key {
  id: string;
  tenant: string | null;
  name: string;
  scopes: string[];
  createdBy: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  status: string;
}
interface UsageRow {
  tenant: string;
  model: string;
  version: number;
  keyId: string | null;
  period: string;
  requests: number;
  rows: number;
  computeMs: number;
  errors: number;
}

const SCOPES = ['infer', 'read', 'admin'] as const;

/** The start of the usage window: 48 h before the current hour (stable within the hour, so the URL is too). */
const usageFrom = (): string => new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000 - 48 * 3_600_000).toISOString();

/** Usage per hour (last 48 h), one line per `by` value (tenant, model or API key), for requests or compute. */
function UsageChart({ rows, by, name = (v) => v || '(platform)' }: { rows: UsageRow[]; by: 'tenant' | 'model' | 'keyId'; name?: (v: string) => string }) {
  const [measure, setMeasure] = useState<'requests' | 'computeMs' | 'errors' | 'rows'>('requests');
  if (rows.length === 0)
    return (
      <Empty title="No usage recorded in the last 48 hours.">
        Usage is counted per tenant, model and hour when requests are served and written every 10 s (<Code>--usage-flush-ms</Code>).
      </Empty>
    );
  // Every hour of the window on the x axis (not only those with usage: a single hour would leave uPlot no range).
  const hours = rows.map((r) => Date.parse(r.period));
  const first = Math.min(Date.parse(usageFrom()), ...hours);
  const last = Math.max(Math.floor(Date.now() / 3_600_000) * 3_600_000, ...hours);
  const x: number[] = [];
  for (let t = first; t <= last; t += 3_600_000) x.push(t);
  const keys = [...new Set(rows.map((r) => name(r[by] ?? '')))].sort();
  const series = keys.map((k) => {
    const values: (number | null)[] = x.map(() => 0);
    for (const r of rows) if (name(r[by] ?? '') === k) values[Math.round((Date.parse(r.period) - first) / 3_600_000)]! += r[measure];
    return { label: k, values };
  });
  return (
    <div>
      <label class="picker">
        Measure{' '}
        <select value={measure} onChange={(e) => setMeasure((e.target as HTMLSelectElement).value as typeof measure)}>
          <option value="requests">requests</option>
          <option value="rows">rows</option>
          <option value="computeMs">compute ms</option>
          <option value="errors">errors</option>
        </select>
      </label>
      <LineChart label={`Usage per hour by ${by === 'keyId' ? 'API key' : by}`} x={x} series={series} height={220} />
      <Table
        label="Usage totals"
        head={[by === 'keyId' ? 'API key' : by, 'Requests', 'Rows', 'Compute ms', 'Errors']}
        rows={keys.map((k) => {
          const mine = rows.filter((r) => name(r[by] ?? '') === k);
          const sum = (f: 'requests' | 'rows' | 'computeMs' | 'errors'): string =>
            num(
              mine.reduce((a, r) => a + r[f], 0),
              1,
            );
          return [k, sum('requests'), sum('rows'), sum('computeMs'), sum('errors')];
        })}
      />
    </div>
  );
}

function NewKey({ tenant, done }: { tenant: string; done: () => void }) {
  const [name, setName] = useState('');
  const [scopes, setScopes] = useState<string[]>(['infer', 'read']);
  const [created, setCreated] = useState<string | null>(null);
  return (
    <div class="inline" role="group" aria-label="Create a key">
      <label>
        Name <input value={name} placeholder="ci" onInput={(e) => setName((e.target as HTMLInputElement).value)} aria-label="Key name" />
      </label>
      {SCOPES.map((s) => (
        <label key={s}>
          <input
            type="checkbox"
            checked={scopes.includes(s)}
            onChange={(e) => setScopes((e.target as HTMLInputElement).checked ? [...scopes, s] : scopes.filter((x) => x !== s))}
          />{' '}
          {s}
        </label>
      ))}
      <ConfirmButton
        label="Create key"
        title="Create API key"
        confirmLabel="Create"
        message={
          <p>
            Create a key for <b>{tenant}</b> with scopes <b>{scopes.join(', ') || '(none)'}</b>? The key is shown once.
          </p>
        }
        action={async () => {
          const k = await api<{ key: string }>('POST', `/api/v1/tenants/${enc(tenant)}/keys`, { name: name || 'console', scopes });
          setCreated(k.key);
        }}
        done={done}
      />
      {created ? (
        <output class="secret">
          New key (copy it now, it is not shown again): <Code>{created}</Code>
        </output>
      ) : null}
    </div>
  );
}

function TenantPage({ name, canManage }: { name: string; canManage: boolean }) {
  const t = useApi<Tenant>(`/api/v1/tenants/${enc(name)}`);
  const keys = useApi<{ keys: Key[] }>(`/api/v1/tenants/${enc(name)}/keys`);
  const [byKey, setByKey] = useState(false);
  const usage = useApi<{ usage: UsageRow[] }>(`/api/v1/usage?tenant=${enc(name)}&group_by=hour&from=${enc(usageFrom())}${byKey ? '&by_key=true' : ''}`, 30_000);
  const keyName = (id: string): string => {
    if (id === '') return '(no key)';
    const k = keys.data?.keys.find((x) => x.id === id);
    return k ? `${k.name} (${id})` : id;
  };
  return (
    <div>
      <Show l={t}>
        {(x) => (
          <Card title={`Tenant ${x.name}${x.disabled ? ' (disabled)' : ''}`}>
            <p class="muted">
              {x.description || 'No description.'} · tier {x.tier} · fair-queueing weight {x.weight} · since {when(x.createdAt)}
            </p>
            <Table
              label="Limits"
              head={['Limit', 'Value']}
              rows={Object.entries(x.effectiveLimits)
                .filter(([, v]) => typeof v !== 'object' || v === null)
                .map(([k, v]) => [k, v === null ? 'unlimited' : String(v)])}
            />
          </Card>
        )}
      </Show>
      <Card title="API keys">
        <Show l={keys}>
          {(d) =>
            d.keys.length === 0 ? (
              <Empty title="No keys.">
                Create one below, or <Code>switchyard tenants keys {name} --create --scopes infer,read</Code>.
              </Empty>
            ) : (
              <Table
                label="Keys"
                head={['Id', 'Name', 'Scopes', 'Status', 'Created', 'Expires', '']}
                rows={d.keys.map((k) => [
                  <Code>{k.id}</Code>,
                  k.name,
                  k.scopes.join(', '),
                  k.status,
                  `${when(k.createdAt)} by ${k.createdBy}`,
                  when(k.expiresAt),
                  canManage && k.revokedAt === null ? (
                    <ConfirmButton
                      danger
                      label="Revoke"
                      title="Revoke key"
                      confirmLabel="Revoke"
                      message={
                        <p>
                          Revoke key <Code>{k.id}</Code> ({k.name})? Requests with it are refused at once.
                        </p>
                      }
                      action={() => api('DELETE', `/api/v1/keys/${enc(k.id)}`)}
                      done={keys.reload}
                    />
                  ) : (
                    ''
                  ),
                ])}
              />
            )
          }
        </Show>
        {canManage ? <NewKey tenant={name} done={keys.reload} /> : null}
      </Card>
      <Card title={`Usage over time, by ${byKey ? 'API key' : 'model'} (last 48 h)`}>
        <fieldset class="inline toggle">
          <legend>Overlay one line per</legend>
          <label>
            <input type="radio" name="usage-by" checked={!byKey} onChange={() => setByKey(false)} /> model
          </label>
          <label>
            <input type="radio" name="usage-by" checked={byKey} onChange={() => setByKey(true)} /> API key
          </label>
        </fieldset>
        <Show l={usage}>{(d) => (byKey ? <UsageChart rows={d.usage} by="keyId" name={keyName} /> : <UsageChart rows={d.usage} by="model" />)}</Show>
      </Card>
    </div>
  );
}

export function Tenants({ who, args }: { who: Whoami; args: string[] }) {
  const platform = who.kind === 'platform';
  const admin = platform || (who.key?.scopes.includes('admin') ?? false);
  const own = who.tenant?.name ?? '';
  const name = platform ? (args[0] ?? '') : own;
  const tenants = useApi<{ tenants: Tenant[] }>(platform ? '/api/v1/tenants' : null);
  const usage = useApi<{ usage: UsageRow[] }>(platform && !name ? `/api/v1/usage?group_by=hour&from=${enc(usageFrom())}` : null, 30_000);
  return (
    <div>
      <h1>Tenants</h1>
      {platform ? (
        <Show l={tenants}>
          {(d) =>
            d.tenants.length === 0 ? (
              <Empty title="No tenants yet.">
                Create one: <Code>switchyard tenants create acme --tier standard</Code> (then give it keys and share or create models).
              </Empty>
            ) : (
              <>
                <Picker label="Tenant" value={name} options={d.tenants.map((t) => t.name)} onChange={(v) => go('tenants', v)} />
                {!name ? (
                  <Table
                    label="Tenants"
                    head={['Tenant', 'Tier', 'Weight', 'Disabled', 'Created']}
                    rows={d.tenants.map((t) => [
                      <a href={href('tenants', t.name)}>{t.name}</a>,
                      t.tier,
                      num(t.weight),
                      t.disabled ? 'yes' : 'no',
                      when(t.createdAt),
                    ])}
                  />
                ) : null}
              </>
            )
          }
        </Show>
      ) : null}
      {!platform && !own ? <ErrorBox error="This key belongs to no tenant." /> : null}
      {name ? <TenantPage key={name} name={name} canManage={admin} /> : null}
      {platform && !name ? (
        <Card title="Usage over time, by tenant (last 48 h)">
          <Show l={usage}>{(d) => <UsageChart rows={d.usage} by="tenant" />}</Show>
        </Card>
      ) : null}
    </div>
  );
}
