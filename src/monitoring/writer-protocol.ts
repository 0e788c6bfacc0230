/**
 * @module
 * The messages between the database prediction sink (main thread, log-sink-database.ts) and its SQLite writer thread
 * (prediction-log-worker.ts). Types only, so neither side imports the other for them.
 */
import type { ErrorCode } from '../errors.js';
import type { TensorJson } from './types.js';

/** A column value as bound. */
export type SqlValue = number | string | null;

/** An element of {@link BufferedBatch.meta}. */
export type WireValue = number | string | null | readonly string[] | TensorJson;

/**
 * Buffered predictions on the wire. `meta`, per prediction: at, model, version, tenant, arm, requestId, latencyMs,
 * then its inputs and its outputs, each as a count followed by per tensor either a {@link TensorJson} (reduced to
 * its shape), or its name, V2 datatype, rank, the dims, then for BYTES the strings, else the byte offset (8-aligned)
 * of its elements in `bytes` and their count.
 */
export interface BufferedBatch {
  readonly meta: readonly WireValue[];
  readonly bytes: ArrayBuffer;
}

/**
 * Main thread → writer: a batch to insert — its rows' values (PREDICTION_COLUMNS per row), or buffered predictions
 * to convert first — or (`id: null`) close.
 */
export type ToWriter =
  { readonly id: number; readonly rows: readonly SqlValue[] } | { readonly id: number; readonly buffered: BufferedBatch } | { readonly id: null };

/** Writer → main thread: a batch committed (`error: null`) or not. */
export interface FromWriter {
  readonly id: number;
  readonly error: { readonly code: ErrorCode; readonly message: string } | null;
}

/** What the thread is started with. */
export interface WriterInit {
  /** The SQLite database file (the server's metadata store). */
  readonly file: string;
}
