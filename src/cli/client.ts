/**
 * @module
 * The HTTP client side of the CLI's admin commands (`models`, `tenants`): one request helper that talks to a
 * running server's `/api/v1`, sends the API key, and turns failures into one-line messages; table and JSON
 * output; the connection options every subcommand takes.
 */
import Table from 'cli-table3';
import { Command, Option } from 'commander';

export const DEFAULT_URL = 'http://127.0.0.1:8000';

export interface ConnFlags {
  url?: string;
  actor?: string;
  apiKey?: string;
  json?: boolean;
}

/** A failure already formatted for the user. */
export class CliError extends Error {}

export function baseUrl(flags: ConnFlags): string {
  return (flags.url ?? process.env['SWITCHYARD_URL'] ?? DEFAULT_URL).replace(/\/+$/, '');
}

type RequestInitLite = { json?: unknown; body?: NonNullable<RequestInit['body']>; headers?: Record<string, string> };

/**
 * One request to the server, returned when it is 2xx (the body unread, so it can be streamed); connection
 * failures and error responses become a CliError naming the problem (the server's `error` message).
 */
export async function request(flags: ConnFlags, method: string, path: string, init: RequestInitLite = {}): Promise<Response> {
  const base = baseUrl(flags);
  const headers: Record<string, string> = { accept: 'application/json', ...init.headers };
  if (flags.actor) headers['x-switchyard-actor'] = flags.actor;
  const key = flags.apiKey ?? process.env['SWITCHYARD_API_KEY'];
  if (key) headers['authorization'] = `Bearer ${key}`;
  let body: NonNullable<RequestInit['body']> | undefined = init.body;
  if (init.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.json);
  }
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body }),
      ...(init.body instanceof ReadableStream ? { duplex: 'half' } : {}),
    } as RequestInit);
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const code = cause?.code;
    if (code === 'ECONNREFUSED')
      throw new CliError(`cannot connect to the Switchyard server at ${base} (connection refused): is it running? Set --url or SWITCHYARD_URL.`);
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') throw new CliError(`cannot resolve the Switchyard server host in ${base} (${code})`);
    throw new CliError(`request to ${base}${path} failed: ${cause?.message ?? (e as Error).message}`);
  }
  if (!res.ok) {
    const text = await res.text();
    let message = text.trim() || res.statusText;
    try {
      const parsed = JSON.parse(text) as { error?: unknown };
      if (typeof parsed.error === 'string') message = parsed.error;
      // The OpenAI-compatible API (/v1): {"error": {"message", "type", "param", "code"}}.
      else if (typeof (parsed.error as { message?: unknown } | null)?.message === 'string') message = (parsed.error as { message: string }).message;
    } catch {
      // not JSON: keep the text
    }
    throw new CliError(`${res.status} ${message}`);
  }
  return res;
}

/** One request to the admin API; returns the parsed JSON (null for 204). */
export async function call<T>(flags: ConnFlags, method: string, path: string, init: RequestInitLite = {}): Promise<T> {
  const res = await request(flags, method, path, init);
  const text = await res.text();
  if (res.status === 204 || text === '') return null as T;
  return JSON.parse(text) as T;
}

export const enc = encodeURIComponent;

export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function printJson(v: unknown): void {
  print(JSON.stringify(v, null, 2));
}

export function table(head: string[], rows: (string | number)[][]): string {
  const t = new Table({ head, style: { head: [], border: [] } });
  for (const r of rows) t.push(r.map(String));
  return t.toString();
}

/** A vertical name/value table. */
export function fields(rows: Array<Record<string, string>>): string {
  const t = new Table({ style: { head: [], border: [] } });
  t.push(...rows);
  return t.toString();
}

export { humanBytes } from '../units.js';

export const when = (iso: string): string => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
export const kv = (o: Readonly<Record<string, unknown>>): string =>
  Object.entries(o)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(', ') || '-';

/** Runs an action, turning failures into `switchyard: …` on stderr and exit status 1. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      if (!(e instanceof CliError)) throw e;
      process.stderr.write(`switchyard: ${e.message}\n`);
      process.exitCode = 1;
    }
  };
}

/** The options every subcommand takes. */
export function withConnection(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', `Switchyard server base URL [env SWITCHYARD_URL] (default: "${DEFAULT_URL}")`))
    .addOption(new Option('--api-key <key>', 'API key sent as "Authorization: Bearer <key>" [env SWITCHYARD_API_KEY]'))
    .addOption(new Option('--actor <name>', 'without a key (open mode): who makes the change, recorded in the event log (default: "anonymous")'))
    .addOption(new Option('--json', 'print the raw JSON response instead of a table'));
}
