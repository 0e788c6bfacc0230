/**
 * @module
 * One servable model version and its lifecycle:
 *
 * ```
 *   UNLOADED ──load──► LOADING ──warm──► READY ──evict/retire (refs = 0)──► UNLOADING ──► UNLOADED
 *                         │
 *                         └──fails──► UNAVAILABLE (reason kept; retried only when the registry changes it)
 * ```
 *
 * `refs` counts requests between acquire and release (queued or running): a version is never unloaded while
 * it is above zero.
 */
import type { ModelConfig } from '../config/index.js';
import { err } from '../errors.js';
import type { LoadedModel, Signature } from '../runtimes/index.js';
import type { Tensor } from '../tensor/index.js';
import { DEFAULT_FLOW, type Batcher, type Flow, type Job } from './batcher.js';

export type VersionState = 'UNLOADED' | 'LOADING' | 'READY' | 'UNLOADING' | 'UNAVAILABLE';

/** Artifact facts the serving layer needs (from the registry). */
export interface VersionArtifact {
  readonly sha256: string;
  readonly size: number;
  /** Local file to load, resolved by the registry's artifact store; a cache keeps it until released. */
  readonly open: () => Promise<{ readonly path: string; release(): void }>;
}

/** A monotonically increasing use counter: cheaper than a clock on the hot path, and all LRU needs. */
let tick = 0;

export class ModelVersion {
  state: VersionState = 'UNLOADED';
  /** Why the version is UNAVAILABLE (or why its last load failed), or null. */
  reason: string | null = null;
  loaded: LoadedModel | null = null;
  batcher: Batcher | null = null;
  /** Rows per batch after resolving config against the signature (0 = unbatched). */
  maxBatchSize = 0;
  /** Duration of the last load including warmup, in milliseconds. */
  loadMs = 0;
  /** Bytes this version holds while resident (measured at its first load), or the reservation while loading. */
  residentBytes = 0;
  /** Requests holding this version (acquired, not yet released). */
  refs = 0;
  /** Use order for LRU eviction. */
  lastUsed = 0;
  /** Was READY at least once (so an evicted version still routes: the next request reloads it). */
  everReady = false;
  /** Unload as soon as `refs` drops to zero (nothing routes here by default any more). */
  retiring = false;
  /** No longer registered (archived or its model deleted): new requests get 404. */
  removed = false;
  /**
   * Batches executed, per batch size in rows: count and execution nanoseconds (Triton's batch_stats), since
   * the version was first loaded by this process (kept across unload / reload).
   */
  readonly batchStats = new Map<number, { count: number; ns: number }>();
  /** The load or unload in progress, or null. */
  transition: Promise<void> | null = null;
  readonly label: string;

  constructor(
    readonly model: string,
    readonly version: number,
    public config: ModelConfig,
    readonly artifact: VersionArtifact,
  ) {
    this.label = String(version);
  }

  get signature(): Signature | null {
    return this.loaded?.signature ?? null;
  }

  get ready(): boolean {
    return this.state === 'READY';
  }

  /** Nothing queued or running and no request holds it: safe to unload. */
  get idle(): boolean {
    return this.refs === 0 && (this.batcher === null || (this.batcher.queued === 0 && this.batcher.running === 0));
  }

  /** Hot path: take a reference if READY. The caller must `release()` exactly once when it returns true. */
  tryAcquire(): boolean {
    if (this.state !== 'READY') return false;
    this.refs++;
    this.lastUsed = ++tick;
    return true;
  }

  touch(): void {
    this.lastUsed = ++tick;
  }

  /** Whether a request of `flow` would be queued now (see Batcher.admits); a version not READY admits (its load decides). */
  admits(flow: Flow = DEFAULT_FLOW): boolean {
    return this.state !== 'READY' || this.batcher === null || this.batcher.admits(flow);
  }

  /**
   * Queue a request of `flow` (fair queueing between flows, see the batcher); inputs in signature order.
   * Throws 503 when not ready or the queue is full.
   */
  submit(inputs: readonly Tensor[], rows: number, timeoutUs: number, abandoned: (() => boolean) | null = null, flow: Flow = DEFAULT_FLOW): Job {
    if (this.state !== 'READY' || !this.batcher) {
      throw err(
        'SY_ERR_MODEL_NOT_READY',
        `model "${this.model}" version ${this.version} is not ready (${this.state}${this.reason ? `: ${this.reason}` : ''})`,
        { retryAfterS: 1 },
      );
    }
    return this.batcher.submit(inputs, rows, timeoutUs || this.config.defaultTimeoutUs, abandoned, flow);
  }
}
