/** Models: the registry's models with aliases and tags; one model's versions, history and actions. */
import { useState } from 'preact/hooks';
import { api, enc, type Model, type ModelDetail, type RegistryEvent, type Whoami } from '../api';
import { bytes, num, when } from '../format';
import { href } from '../router';
import { Bars, Card, Code, ConfirmButton, Empty, ErrorBox, Show, Table, useApi } from '../ui';

const chips = (o: Record<string, string | number>): preact.JSX.Element => (
  <span class="chips">
    {Object.entries(o).map(([k, v]) => (
      <span class="chip" key={k}>
        {k}
        {v === '' ? '' : `: ${v}`}
      </span>
    ))}
  </span>
);

function ModelList() {
  const l = useApi<{ models: Model[] }>('/api/v1/models');
  return (
    <div>
      <h1>Models</h1>
      <Show l={l}>
        {(d) =>
          d.models.length === 0 ? (
            <Empty title="No models registered.">
              Push one: <Code>switchyard models push model.onnx --name my-model --alias production</Code>, or start the server with{' '}
              <Code>--model-repository DIR</Code>.
            </Empty>
          ) : (
            <Table
              label="Registered models"
              head={['Model', 'Aliases', 'Tags', 'Versions', 'Owner', 'Load', 'Updated']}
              rows={d.models.map((m) => [
                <a href={href('models', m.name)}>{m.name}</a>,
                chips(m.aliases),
                chips(m.tags),
                num(m.latestVersion),
                m.owner || '–',
                m.loadPolicy + (m.pinned ? ', pinned' : ''),
                when(m.updatedAt),
              ])}
            />
          )
        }
      </Show>
    </div>
  );
}

function describe(e: RegistryEvent): string {
  switch (e.type) {
    case 'alias_moved':
      return `alias ${e.alias} → v${e.toVersion}${e.fromVersion === null ? '' : ` (was v${e.fromVersion})`}`;
    case 'alias_removed':
      return `alias ${e.alias} removed (was v${e.fromVersion})`;
    case 'version_created':
      return `version ${e.version} pushed`;
    case 'version_archived':
      return `version ${e.version} archived`;
    case 'version_status':
      return `version ${e.version} ${e.value ?? ''}`;
    case 'tag_set':
      return `tag ${e.key}=${e.value}${e.version === null ? '' : ` on v${e.version}`}`;
    case 'tag_removed':
      return `tag ${e.key} removed${e.version === null ? '' : ` from v${e.version}`}`;
    case 'routing_set':
      return `routing policy revision ${e.key}${reasonOf(e.value)}`;
    case 'routing_removed':
      return 'routing policy removed';
    case 'experiment_started':
      return `experiment ${e.key} started`;
    case 'experiment_stopped':
      return `experiment ${e.key} stopped${e.value ? `: ${e.value}` : ''}`;
    default:
      return e.type.replace('_', ' ');
  }
}

function reasonOf(v: string | null): string {
  try {
    const r = (JSON.parse(v ?? '{}') as { reason?: string }).reason;
    return r ? ` (${r})` : '';
  } catch {
    return '';
  }
}

/** Where an alias pointed at a past time (GET …/aliases/{alias}?at=). */
function AliasAt({ model, aliases }: { model: string; aliases: string[] }) {
  const [alias, setAlias] = useState(aliases[0] ?? '');
  const [at, setAt] = useState('');
  const [answer, setAnswer] = useState<string | null>(null);
  const ask = async (e: Event): Promise<void> => {
    e.preventDefault();
    try {
      const r = await api<{ version: number | null; at: string }>(
        'GET',
        `/api/v1/models/${enc(model)}/aliases/${enc(alias)}?at=${enc(new Date(at).toISOString())}`,
      );
      setAnswer(r.version === null ? `${alias} was not set at ${when(r.at)}` : `${alias} pointed at version ${r.version} at ${when(r.at)}`);
    } catch (x) {
      setAnswer((x as Error).message);
    }
  };
  if (aliases.length === 0) return null;
  return (
    <form class="inline" onSubmit={(e) => void ask(e)} aria-label="Alias at a time">
      <label>
        Which version did{' '}
        <select value={alias} onChange={(e) => setAlias((e.target as HTMLSelectElement).value)}>
          {aliases.map((a) => (
            <option key={a}>{a}</option>
          ))}
        </select>{' '}
        serve at
      </label>
      <input type="datetime-local" step="1" required value={at} onInput={(e) => setAt((e.target as HTMLInputElement).value)} aria-label="Time" />
      <button type="submit">Ask</button>
      {answer ? <output>{answer}</output> : null}
    </form>
  );
}

function MoveAlias({ m, done }: { m: ModelDetail; done: () => void }) {
  const live = m.versions.filter((v) => v.archivedAt === null && v.status === 'ready');
  const [alias, setAlias] = useState(Object.keys(m.aliases)[0] ?? 'production');
  const [version, setVersion] = useState(String(live[live.length - 1]?.version ?? ''));
  if (live.length === 0) return null;
  return (
    <div class="inline" role="group" aria-label="Move an alias">
      <label>
        Alias <input value={alias} list="alias-names" size={12} onInput={(e) => setAlias((e.target as HTMLInputElement).value)} aria-label="Alias name" />
      </label>
      <datalist id="alias-names">
        {Object.keys(m.aliases).map((a) => (
          <option key={a} value={a} />
        ))}
      </datalist>
      <label>
        to version{' '}
        <select value={version} onChange={(e) => setVersion((e.target as HTMLSelectElement).value)} aria-label="Target version">
          {live.map((v) => (
            <option key={v.version} value={String(v.version)}>
              {v.version}
            </option>
          ))}
        </select>
      </label>
      <ConfirmButton
        label="Move alias"
        title="Move alias"
        confirmLabel="Move"
        message={
          <p>
            Point <b>{alias}</b> of <b>{m.name}</b> at version <b>{version}</b>
            {m.aliases[alias] === undefined ? ' (a new alias)' : ` (now ${m.aliases[alias]})`}? Requests to the alias go to the new version once it is loaded
            and warm.
          </p>
        }
        action={() => api('PUT', `/api/v1/models/${enc(m.name)}/aliases/${enc(alias)}`, { version: Number(version) })}
        done={done}
      />
    </div>
  );
}

function ModelPage({ name, who }: { name: string; who: Whoami }) {
  const l = useApi<ModelDetail>(`/api/v1/models/${enc(name)}`, 15_000);
  const ev = useApi<{ events: RegistryEvent[] }>(`/api/v1/models/${enc(name)}/events?limit=200`);
  const [metric, setMetric] = useState('');
  const reload = (): void => {
    l.reload();
    ev.reload();
  };
  const canChange = who.kind === 'platform' || (who.key?.scopes.includes('admin') ?? false);
  return (
    <div>
      <p>
        <a href={href('models')}>← Models</a>
      </p>
      <Show l={l}>
        {(m) => {
          const state = new Map((m.serving ?? []).map((s) => [String(s.version), s]));
          const aliasesOf = (v: number): string[] =>
            Object.entries(m.aliases)
              .filter(([, n]) => n === v)
              .map(([a]) => a);
          const metrics = [...new Set(m.versions.flatMap((v) => Object.keys(v.metrics)))].sort();
          const shown = metric || metrics[0] || '';
          return (
            <>
              <h1>
                {m.name} {chips(m.aliases)}
              </h1>
              {m.description ? <p>{m.description}</p> : null}
              <p class="muted">
                Owner {m.owner || '–'} · tags {Object.keys(m.tags).length ? chips(m.tags) : 'none'} · load policy {m.loadPolicy}
                {m.pinned ? ' (pinned)' : ''} · <a href={href('traffic', m.name)}>traffic</a> · <a href={href('monitoring', m.name)}>monitoring</a>
              </p>
              <Card
                title="Versions"
                actions={
                  canChange ? (
                    <span class="row">
                      <ConfirmButton
                        label="Load"
                        title="Load model"
                        message={
                          <p>
                            Load the served versions of <b>{m.name}</b> into memory now?
                          </p>
                        }
                        action={() => api('POST', `/v2/repository/models/${enc(m.name)}/load`, {})}
                        done={reload}
                      />
                      <ConfirmButton
                        label="Unload"
                        title="Unload model"
                        message={
                          <p>
                            Unload every resident version of <b>{m.name}</b>? It stays servable: the next request loads it again (a cold start).
                          </p>
                        }
                        action={() => api('POST', `/v2/repository/models/${enc(m.name)}/unload`, {})}
                        done={reload}
                      />
                    </span>
                  ) : undefined
                }
              >
                {m.versions.length === 0 ? (
                  <Empty title="No versions yet.">
                    Push one: <Code>switchyard models push model.onnx --name {m.name}</Code>
                  </Empty>
                ) : (
                  <Table
                    label="Versions"
                    head={['Version', 'Aliases', 'Status', 'Serving', 'Metrics', 'Signature', 'Size', 'Pushed', '']}
                    rows={m.versions.map((v) => {
                      const s = state.get(String(v.version));
                      return [
                        String(v.version),
                        chips(Object.fromEntries(aliasesOf(v.version).map((a) => [a, '']))),
                        v.archivedAt ? `archived ${when(v.archivedAt)}` : v.status,
                        s ? `${s.state}${s.default ? ' (default)' : ''}${s.residentBytes ? `, ${bytes(s.residentBytes)}` : ''}` : '–',
                        chips(Object.fromEntries(Object.entries(v.metrics).map(([k, x]) => [k, num(x, 4)]))),
                        v.signature ? (
                          <span class="small">
                            {v.signature.inputs.map((t) => `${t.name} ${t.datatype}[${t.shape.join(',')}]`).join(', ')} →{' '}
                            {v.signature.outputs.map((t) => `${t.name} ${t.datatype}[${t.shape.join(',')}]`).join(', ')}
                          </span>
                        ) : (
                          '–'
                        ),
                        bytes(v.artifact.size),
                        `${when(v.createdAt)} by ${v.createdBy}`,
                        canChange && v.archivedAt === null ? (
                          <ConfirmButton
                            danger
                            label="Archive"
                            title="Archive version"
                            confirmLabel="Archive"
                            message={
                              <p>
                                Archive version <b>{v.version}</b> of <b>{m.name}</b>? It stops being served (aliases pointing at it must be moved first).
                              </p>
                            }
                            action={() => api('POST', `/api/v1/models/${enc(m.name)}/versions/${v.version}/archive`, {})}
                            done={reload}
                          />
                        ) : (
                          ''
                        ),
                      ];
                    })}
                  />
                )}
                {canChange ? <MoveAlias m={m} done={reload} /> : null}
              </Card>
              {metrics.length > 0 ? (
                <Card
                  title="Metric across versions"
                  actions={
                    <select aria-label="Metric" value={shown} onChange={(e) => setMetric((e.target as HTMLSelectElement).value)}>
                      {metrics.map((x) => (
                        <option key={x}>{x}</option>
                      ))}
                    </select>
                  }
                >
                  <Bars
                    label={`${shown} per version`}
                    labels={m.versions.filter((v) => shown in v.metrics).map((v) => `v${v.version}`)}
                    values={m.versions.filter((v) => shown in v.metrics).map((v) => v.metrics[shown]!)}
                  />
                </Card>
              ) : null}
              <Card title="History">
                <AliasAt model={m.name} aliases={Object.keys(m.aliases)} />
                <Show l={ev}>
                  {(d) =>
                    d.events.length === 0 ? (
                      <Empty title="No events." />
                    ) : (
                      <ol class="timeline" aria-label="Model history">
                        {[...d.events]
                          .sort((a, b) => b.id - a.id)
                          .map((e) => (
                            <li key={e.id}>
                              <time>{when(e.at)}</time> <span class={`ev ${e.type}`}>{describe(e)}</span> <span class="muted">by {e.actor}</span>
                            </li>
                          ))}
                      </ol>
                    )
                  }
                </Show>
              </Card>
            </>
          );
        }}
      </Show>
      {l.error?.status === 404 ? <ErrorBox error={`No model "${name}" (or your key cannot see it).`} /> : null}
    </div>
  );
}

export function Models({ who, args }: { who: Whoami; args: string[] }) {
  return args[0] ? <ModelPage name={args[0]} who={who} /> : <ModelList />;
}
