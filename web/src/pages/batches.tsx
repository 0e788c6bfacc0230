/** Batch jobs: the caller's batches (GET /v1/batches) with progress, their files, and cancel. */
import { api, apiText, enc, type Whoami } from '../api';
import { download, num, when } from '../format';
import { Card, Code, ConfirmButton, Empty, Show, Table, useApi } from '../ui';

interface Batch {
  id: string;
  status: string;
  endpoint: string;
  input_file_id: string;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  completed_at: number | null;
  failed_at: number | null;
  cancelled_at: number | null;
  expires_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  errors: { data: { code: string; line: number | null; message: string }[] } | null;
  metadata: Record<string, string> | null;
}

const at = (s: number | null): string => (s === null ? '–' : when(new Date(s * 1000).toISOString()));
const ENDED = new Set(['completed', 'failed', 'expired', 'cancelled']);

function Progress({ b }: { b: Batch }) {
  const c = b.request_counts;
  const done = c.completed + c.failed;
  return (
    <span class="progress">
      <progress max={Math.max(1, c.total)} value={done} aria-label={`Progress of ${b.id}`} /> {num(done)} / {num(c.total)}
      {c.failed ? <span class="muted"> ({num(c.failed)} failed)</span> : null}
    </span>
  );
}

function FileButton({ id, label, name }: { id: string; label: string; name: string }) {
  return (
    <button type="button" onClick={() => void apiText('GET', `/v1/files/${enc(id)}/content`).then((t) => download(name, t, 'application/x-ndjson'))}>
      {label}
    </button>
  );
}

export function Batches(_: { who: Whoami }) {
  const l = useApi<{ data: Batch[] }>('/v1/batches?limit=100', 5000);
  return (
    <div>
      <h1>Batch jobs</h1>
      <Card title="Batches">
        <Show l={l}>
          {(d) =>
            d.data.length === 0 ? (
              <Empty title="No batch jobs.">
                Upload a JSONL file with <Code>POST /v1/files</Code> (purpose <Code>batch</Code>), then <Code>POST /v1/batches</Code> — the OpenAI SDK's{' '}
                <Code>client.batches.create</Code> works unmodified. See docs/batch.md.
              </Empty>
            ) : (
              <Table
                label="Batch jobs"
                head={['Batch', 'Status', 'Endpoint', 'Progress', 'Created', 'Ended', 'Files', '']}
                rows={d.data.map((b) => [
                  <Code>{b.id}</Code>,
                  <span class={`badge ${b.status}`}>{b.status}</span>,
                  b.endpoint,
                  <Progress b={b} />,
                  at(b.created_at),
                  at(b.completed_at ?? b.failed_at ?? b.cancelled_at),
                  <span class="row">
                    {b.output_file_id ? <FileButton id={b.output_file_id} label="Output" name={`${b.id}-output.jsonl`} /> : null}
                    {b.error_file_id ? <FileButton id={b.error_file_id} label="Errors" name={`${b.id}-errors.jsonl`} /> : null}
                    {b.errors?.data.length ? (
                      <span class="small" title={b.errors.data.map((e) => `${e.code}${e.line === null ? '' : ` (line ${e.line})`}: ${e.message}`).join('\n')}>
                        {b.errors.data[0]!.code}
                        {b.errors.data.length > 1 ? ` +${b.errors.data.length - 1}` : ''}
                      </span>
                    ) : null}
                  </span>,
                  ENDED.has(b.status) || b.status === 'cancelling' ? (
                    ''
                  ) : (
                    <ConfirmButton
                      danger
                      label="Cancel"
                      title="Cancel batch"
                      confirmLabel="Cancel batch"
                      message={
                        <p>
                          Cancel <Code>{b.id}</Code>? Lines already done are kept in its output; the rest are not run.
                        </p>
                      }
                      action={() => api('POST', `/v1/batches/${enc(b.id)}/cancel`, {})}
                      done={l.reload}
                    />
                  ),
                ])}
              />
            )
          }
        </Show>
        <p class="muted small">Batches belong to the key's tenant (a platform key sees the platform's own). Refreshed every 5 s.</p>
      </Card>
    </div>
  );
}
