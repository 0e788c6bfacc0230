/**
 * @module
 * Job-completion webhooks: when a V2 job ends, the replica that ended it POSTs the job (JSON, as
 * `GET /api/v1/batch/jobs/{id}` shows it) to the job's webhook URL. A delivery that fails (network error,
 * timeout, non-2xx) is retried with exponential backoff (`backoffMs`, doubling) up to `attempts` times. Delivery is
 * at most once per ending, from the replica that ended the job: a replica that dies between ending a job and
 * delivering its webhook does not deliver it.
 */
import type { Logger } from 'pino';

export interface WebhookOptions {
  /** Tries in all. @default 5 */
  readonly attempts: number;
  /** Wait before the second try, doubled for each next one, in ms. @default 1000 */
  readonly backoffMs: number;
  /** Per-try timeout, in ms. @default 10000 */
  readonly timeoutMs: number;
  readonly logger: Logger;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** POST `body` to `url`, retrying as {@link WebhookOptions} say; resolves with whether a try got a 2xx. */
export async function deliverWebhook(url: string, body: unknown, o: WebhookOptions): Promise<boolean> {
  const text = JSON.stringify(body);
  for (let i = 0; i < o.attempts; i++) {
    if (i > 0) await sleep(o.backoffMs * 2 ** (i - 1));
    try {
      const res = await fetch(url, {
        method: 'POST',
        body: text,
        signal: AbortSignal.timeout(o.timeoutMs),
        headers: { 'content-type': 'application/json', 'user-agent': 'switchyard-batch-webhook', 'x-switchyard-attempt': String(i + 1) },
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) return true;
      o.logger.warn({ url, status: res.status, attempt: i + 1 }, 'batch webhook refused');
    } catch (e) {
      o.logger.warn({ url, err: e, attempt: i + 1 }, 'batch webhook failed');
    }
  }
  o.logger.error({ url, attempts: o.attempts }, 'batch webhook not delivered');
  return false;
}
