/**
 * @module
 * OpenAI's Batch API formats: the input file's lines (`{custom_id, method, url, body}`) checked as OpenAI checks
 * them (a file that fails becomes a `failed` batch whose `errors.data[]` name the code, line and param), and
 * the output and error files' lines (`{id, custom_id, response: {status_code, request_id, body}, error}`).
 */
import { randomBytes } from 'node:crypto';

/** The endpoints a batch may run (its `endpoint`; every line's `url` must equal it). */
export const BATCH_ENDPOINTS = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings'] as const;
export type BatchEndpoint = (typeof BATCH_ENDPOINTS)[number];

/** Most requests in one batch (OpenAI's limit). */
export const MAX_BATCH_TASKS = 50_000;
/** Most validation errors listed in a failed batch's `errors.data`. */
export const MAX_LISTED_ERRORS = 1000;

/** A validation error, as `errors.data[]` lists it (`line` is 1-based; null when about the whole file). */
export interface LineError {
  readonly code: string;
  readonly line: number | null;
  readonly message: string;
  readonly param: string | null;
}

/** One checked input line, kept as the exact text it was sent as. */
export interface InputLine {
  readonly line: number;
  readonly text: string;
}

export interface CheckedInput {
  readonly lines: readonly InputLine[];
  readonly errors: readonly LineError[];
  /** The model every line names (null when no line named one). */
  readonly model: string | null;
}

/** A parsed line, as the worker runs it. */
export interface BatchRequestLine {
  readonly custom_id: string;
  readonly method: string;
  readonly url: string;
  readonly body: Record<string, unknown>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Check an input file against `endpoint`: every non-blank line a JSON object with a unique string `custom_id`,
 * `method` POST, `url` = the endpoint and an object `body` naming one model shared by all lines; at least one line
 * and at most {@link MAX_BATCH_TASKS}. Returns the lines and every error found (at most {@link MAX_LISTED_ERRORS}).
 */
export function checkInput(content: string, endpoint: BatchEndpoint): CheckedInput {
  const errors: LineError[] = [];
  const lines: InputLine[] = [];
  const seen = new Set<string>();
  let model: string | null = null;
  const add = (e: LineError): void => {
    if (errors.length < MAX_LISTED_ERRORS) errors.push(e);
  };
  const raw = content.split('\n');
  for (let i = 0; i < raw.length; i++) {
    const text = raw[i]!.endsWith('\r') ? raw[i]!.slice(0, -1) : raw[i]!;
    if (text.trim() === '') continue;
    const line = i + 1;
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      add({ code: 'invalid_json_line', line, message: 'This line is not parseable as valid JSON.', param: null });
      continue;
    }
    if (!isObject(v)) {
      add({ code: 'invalid_json_line', line, message: 'This line is not a JSON object.', param: null });
      continue;
    }
    const id = v['custom_id'];
    if (typeof id !== 'string' || id === '') {
      add({ code: 'missing_required_parameter', line, message: "Missing required parameter: 'custom_id' (a non-empty string).", param: 'custom_id' });
      continue;
    }
    if (seen.has(id)) {
      add({
        code: 'duplicate_custom_id',
        line,
        message: 'The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.',
        param: 'custom_id',
      });
      continue;
    }
    seen.add(id);
    if (v['method'] !== 'POST') {
      add({ code: 'invalid_value', line, message: "Invalid value for 'method': only POST is supported.", param: 'method' });
      continue;
    }
    if (v['url'] !== endpoint) {
      add({ code: 'url_mismatch', line, message: `The provided URL for this request does not match the batch endpoint (${endpoint}).`, param: 'url' });
      continue;
    }
    const body = v['body'];
    if (!isObject(body)) {
      add({ code: 'missing_required_parameter', line, message: "Missing required parameter: 'body' (a JSON object).", param: 'body' });
      continue;
    }
    const m = body['model'];
    if (typeof m !== 'string' || m === '') {
      add({ code: 'missing_required_parameter', line, message: "Missing required parameter: 'body.model'.", param: 'body.model' });
      continue;
    }
    if (model === null) model = m;
    else if (m !== model) {
      add({
        code: 'model_mismatch',
        line,
        message: `The provided model '${m}' does not match the model of the other requests in this batch ('${model}'). A batch uses one model.`,
        param: 'body.model',
      });
      continue;
    }
    lines.push({ line, text });
  }
  if (lines.length === 0 && errors.length === 0) add({ code: 'empty_file', line: null, message: 'The batch input file is empty.', param: null });
  if (lines.length > MAX_BATCH_TASKS) {
    add({
      code: 'too_many_tasks',
      line: null,
      message: `The batch input file has ${lines.length} requests; a batch holds at most ${MAX_BATCH_TASKS}.`,
      param: null,
    });
  }
  return { lines, errors, model };
}

/** A batch request id (`batch_req_` and 32 hex digits), one per executed line. */
export function batchRequestId(): string {
  return `batch_req_${randomBytes(16).toString('hex')}`;
}

/** An output or error line for a request that got a response (any status). */
export function responseLine(customId: string, status: number, requestId: string, body: unknown): string {
  return JSON.stringify({ id: batchRequestId(), custom_id: customId, response: { status_code: status, request_id: requestId, body }, error: null });
}

/** An error line for a request that never ran (`batch_expired`, `batch_cancelled`). */
export function unrunLine(customId: string, code: string, message: string): string {
  return JSON.stringify({ id: batchRequestId(), custom_id: customId, response: null, error: { code, message } });
}
