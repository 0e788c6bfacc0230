/**
 * The console's only way to the server: the admin and inference APIs the CLI uses, with the signed-in key
 * (kept in sessionStorage: gone when the tab closes) as a Bearer token. Errors carry the server's message and code.
 */
const KEY = 'switchyard.apiKey';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null,
  ) {
    super(message);
  }
}

export const session = {
  key(): string | null {
    return sessionStorage.getItem(KEY);
  },
  set(key: string): void {
    sessionStorage.setItem(KEY, key);
  },
  clear(): void {
    sessionStorage.removeItem(KEY);
  },
};

/** Listeners told when the server says the key is no longer valid (401). */
const onUnauthorized = new Set<() => void>();
export function whenUnauthorized(f: () => void): () => void {
  onUnauthorized.add(f);
  return () => onUnauthorized.delete(f);
}

export async function api<T>(method: string, path: string, body?: unknown, key: string | null = session.key()): Promise<T> {
  const text = await apiText(method, path, body, key);
  return (text === '' ? null : JSON.parse(text)) as T;
}

/** A request whose answer is text (CSV exports, /metrics); errors as for api(). */
export async function apiText(method: string, path: string, body?: unknown, key: string | null = session.key()): Promise<string> {
  const headers: Record<string, string> = { accept: 'application/json, text/plain;q=0.9, */*;q=0.5' };
  if (key) headers['authorization'] = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: Response;
  try {
    res = await fetch(path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch (e) {
    throw new ApiError(0, `cannot reach the server: ${(e as Error).message}`, null);
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text || res.statusText;
    let code: string | null = null;
    try {
      const j = JSON.parse(text) as { error?: unknown; code?: unknown };
      if (typeof j.error === 'string') message = j.error;
      else if (j.error && typeof (j.error as { message?: unknown }).message === 'string') message = (j.error as { message: string }).message;
      if (typeof j.code === 'string') code = j.code;
    } catch {
      // not JSON
    }
    if (res.status === 401 && key === session.key()) for (const f of onUnauthorized) f();
    throw new ApiError(res.status, `${res.status}: ${message}`, code);
  }
  return text;
}

export const enc = encodeURIComponent;

// ---- shapes the pages read (the admin API's, see /docs/json) ----

export interface Whoami {
  kind: 'platform' | 'tenant';
  actor: string;
  tenant: { name: string } | null;
  key: { id: string; scopes: string[] } | null;
}
export interface Model {
  name: string;
  description: string;
  owner: string;
  tags: Record<string, string>;
  aliases: Record<string, number>;
  latestVersion: number;
  routing: unknown;
  routingRevision: number;
  loadPolicy: string;
  pinned: boolean;
  updatedAt: string;
}
export interface Version {
  version: number;
  description: string;
  artifact: { size: number; sha256: string };
  metrics: Record<string, number>;
  tags: Record<string, string>;
  signature: { inputs: Tensor[]; outputs: Tensor[] } | null;
  status: string;
  archivedAt: string | null;
  createdAt: string;
  createdBy: string;
}
export interface Tensor {
  name: string;
  datatype: string;
  shape: number[];
}
export interface Serving {
  version: string | number;
  state: string;
  residentBytes: number;
  inflight: number;
  aliases: string[];
  default: boolean;
}
export interface ModelDetail extends Model {
  versions: Version[];
  serving?: Serving[];
}
export interface RegistryEvent {
  id: number;
  model: string;
  type: string;
  version: number | null;
  alias: string | null;
  fromVersion: number | null;
  toVersion: number | null;
  key: string | null;
  value: string | null;
  actor: string;
  at: string;
}
