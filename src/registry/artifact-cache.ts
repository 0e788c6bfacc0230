/**
 * @module
 * A replica's content-addressed local cache of a remote artifact store, keyed by the registry's sha256.
 *
 * - Atomic: bytes are written to a temp file in the cache directory and renamed into place only after their
 *   sha256 and size matched the registry's; a reader never sees a partial or unverified file.
 * - Single-flight: concurrent `acquire`s of one digest share one fetch.
 * - Bounded by bytes, least recently used evicted first. A leased file (being loaded by a runtime) is never
 *   evicted, so the bound can be exceeded by the files in use at once, and only by them.
 * - Reused across restarts: `open` indexes the files already there (recency from their mtime, which each use
 *   refreshes) and removes temp files left by processes that died mid-download.
 */
import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import { type ArtifactLease, type ArtifactSource, commit, contentPath, HashingCounter, isSha256, spool } from './artifacts.js';

export interface ArtifactCacheOptions {
  dir: string;
  /** Bytes the cache may hold (files in use excepted). */
  maxBytes: number;
  /** File name suffix. Default `.onnx`. */
  extension?: string;
  logger?: Logger;
}

/** What the cache did, for metrics and tests. */
export interface ArtifactCacheStats {
  hits: number;
  /** Fetches started (one per digest at a time, however many waited on it). */
  fetches: number;
  /** Bytes fetched and verified. */
  fetchedBytes: number;
  evictions: number;
  /** Fetched bytes whose digest or size differed from the registry's (discarded). */
  corrupt: number;
}

interface Entry {
  size: number;
  holds: number;
}
interface Fill {
  waiters: number;
  done: Promise<void>;
}

export class ArtifactCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #ext: string;
  readonly #logger: Logger | undefined;
  /** Insertion order is recency order: a use deletes and re-inserts (oldest first). */
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Fill>();
  /** Unlinks in progress: a new fill of the same digest waits for them before renaming into place. */
  readonly #removals = new Map<string, Promise<void>>();
  #bytes = 0;
  readonly stats: ArtifactCacheStats = { hits: 0, fetches: 0, fetchedBytes: 0, evictions: 0, corrupt: 0 };

  private constructor(opts: ArtifactCacheOptions) {
    this.dir = resolve(opts.dir);
    this.maxBytes = opts.maxBytes;
    this.#ext = opts.extension ?? '.onnx';
    this.#logger = opts.logger;
  }

  /** Index what an earlier run left in `dir` (oldest use first), drop dead processes' temp files, enforce the bound. */
  static async open(opts: ArtifactCacheOptions): Promise<ArtifactCache> {
    const cache = new ArtifactCache(opts);
    const found: { sha: string; size: number; mtime: number }[] = [];
    for (const sub of await readdir(cache.dir).catch(() => [] as string[])) {
      if (sub.startsWith('.tmp-')) {
        await removeIfOrphan(join(cache.dir, sub));
        continue;
      }
      if (!/^[0-9a-f]{2}$/.test(sub)) continue;
      for (const name of await readdir(join(cache.dir, sub)).catch(() => [] as string[])) {
        const path = join(cache.dir, sub, name);
        if (name.startsWith('.tmp-')) {
          await removeIfOrphan(path);
          continue;
        }
        const sha = name.endsWith(cache.#ext) ? name.slice(0, name.length - cache.#ext.length) : '';
        if (!isSha256(sha) || sha.slice(0, 2) !== sub) continue;
        const s = await stat(path).catch(() => null);
        if (s?.isFile()) found.push({ sha, size: s.size, mtime: s.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) cache.#add(f.sha, f.size);
    await cache.#evict();
    return cache;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether the bytes of this digest are cached. */
  has(sha256: string): boolean {
    return this.#entries.has(sha256);
  }

  pathFor(sha256: string): string {
    return contentPath(this.dir, sha256, this.#ext);
  }

  /**
   * Lease the file holding `sha256` (of `size` bytes). When it is not cached, `fetch()` supplies the bytes —
   * once per digest however many callers wait — which are verified against the digest and size before
   * anyone sees them; a mismatch fails with SY_ERR_ARTIFACT_UNAVAILABLE and caches nothing.
   */
  async acquire(sha256: string, size: number, fetch: () => ArtifactSource | Promise<ArtifactSource>): Promise<ArtifactLease> {
    const path = this.pathFor(sha256);
    const e = this.#entries.get(sha256);
    if (e !== undefined && e.size === size) {
      this.stats.hits++;
      e.holds++;
      return this.#lease(sha256, e, path);
    }
    if (e !== undefined && e.holds === 0) await this.#drop(sha256); // a file of the wrong size: fetch it again
    let fill = this.#inflight.get(sha256);
    if (fill === undefined) {
      const started: Fill = { waiters: 0, done: Promise.resolve() };
      started.done = this.#fill(sha256, size, fetch, started).finally(() => {
        if (this.#inflight.get(sha256) === started) this.#inflight.delete(sha256);
      });
      this.#inflight.set(sha256, (fill = started));
    }
    fill.waiters++;
    await fill.done;
    // The fill placed the file holding one lease per waiter: adopt ours.
    return this.#lease(sha256, this.#entries.get(sha256)!, path);
  }

  /**
   * Stream bytes of unknown digest into the cache (a push): hashed on the way in, then kept under their
   * digest and leased to the caller (who uploads them to the store from there).
   */
  async ingest(data: ArtifactSource, maxBytes: number): Promise<ArtifactLease & { sha256: string; size: number }> {
    const { tmp, sha256, size } = await spool(this.dir, data, new HashingCounter(maxBytes));
    await this.#place(tmp, sha256, size, 1);
    return { ...this.#lease(sha256, this.#entries.get(sha256)!, this.pathFor(sha256)), sha256, size };
  }

  /** Forget and delete the cached bytes of `sha256` (when no lease holds them). */
  async remove(sha256: string): Promise<void> {
    const e = this.#entries.get(sha256);
    if (e !== undefined && e.holds === 0) await this.#drop(sha256);
  }

  async #fill(sha256: string, size: number, fetch: () => ArtifactSource | Promise<ArtifactSource>, fill: Fill): Promise<void> {
    this.stats.fetches++;
    let overflow = false;
    const tooLarge = (): Error => {
      overflow = true;
      return err('SY_ERR_ARTIFACT_UNAVAILABLE', `artifact ${sha256}: the store returned more than the registered ${size} bytes; discarded`);
    };
    let got;
    try {
      got = await spool(this.dir, await fetch(), new HashingCounter(size, tooLarge));
    } catch (e) {
      if (overflow) this.stats.corrupt++;
      throw e;
    }
    if (got.sha256 !== sha256 || got.size !== size) {
      this.stats.corrupt++;
      await rm(got.tmp, { force: true });
      throw err(
        'SY_ERR_ARTIFACT_UNAVAILABLE',
        `artifact ${sha256}: the store returned ${got.size} bytes hashing to ${got.sha256}, not the registered ${size} bytes; discarded`,
      );
    }
    this.stats.fetchedBytes += size;
    // Once indexed, later callers find the file: the waiters counted at that moment are the ones to hold it for.
    await this.#place(got.tmp, sha256, size, () => {
      this.#inflight.delete(sha256);
      return fill.waiters;
    });
  }

  /** Rename a verified temp file into place and index it, held by `holds` leases to be adopted (never evicted before). */
  async #place(tmp: string, sha256: string, size: number, holds: number | (() => number)): Promise<void> {
    await this.#removals.get(sha256);
    try {
      await commit(tmp, this.pathFor(sha256));
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    if (!this.#entries.has(sha256)) this.#add(sha256, size);
    // Waiters that joined until now adopt a hold each; the count is read after the last await before they resume.
    this.#entries.get(sha256)!.holds += typeof holds === 'number' ? holds : holds();
    await this.#evict();
  }

  #add(sha256: string, size: number): void {
    this.#entries.set(sha256, { size, holds: 0 });
    this.#bytes += size;
  }

  /** A lease on `e`, whose hold the caller already counted. */
  #lease(sha256: string, e: Entry, path: string): ArtifactLease {
    this.#entries.delete(sha256);
    this.#entries.set(sha256, e);
    const now = new Date();
    utimes(path, now, now).catch(() => undefined); // recency survives a restart
    let released = false;
    return {
      path,
      release: () => {
        if (released) return;
        released = true;
        e.holds--;
        if (e.holds === 0 && this.#bytes > this.maxBytes) void this.#evict();
      },
    };
  }

  /** Evict least recently used, unleased files until the bound holds. */
  async #evict(): Promise<void> {
    const victims: string[] = [];
    for (const [sha, e] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      if (e.holds > 0) continue;
      victims.push(sha);
      this.#forget(sha, e);
    }
    for (const sha of victims) {
      this.stats.evictions++;
      this.#logger?.debug({ sha256: sha }, 'artifact cache: evicted');
      await this.#unlink(sha);
    }
  }

  async #drop(sha256: string): Promise<void> {
    const e = this.#entries.get(sha256);
    if (e === undefined) return;
    this.#forget(sha256, e);
    await this.#unlink(sha256);
  }

  #forget(sha256: string, e: Entry): void {
    this.#entries.delete(sha256);
    this.#bytes -= e.size;
  }

  async #unlink(sha256: string): Promise<void> {
    const p = rm(this.pathFor(sha256), { force: true }).catch((e: unknown) =>
      this.#logger?.warn({ err: e, sha256 }, 'artifact cache: could not delete a file'),
    );
    const done = p.then(() => undefined);
    this.#removals.set(sha256, done);
    await done;
    if (this.#removals.get(sha256) === done) this.#removals.delete(sha256);
  }
}

/** Remove `.tmp-<pid>-…` unless process `pid` is still running (it may be another replica writing it). */
async function removeIfOrphan(path: string): Promise<void> {
  const pid = Number(/^\.tmp-(\d+)-/.exec(basename(path))?.[1]);
  if (Number.isSafeInteger(pid) && pid !== process.pid && alive(pid)) return;
  await rm(path, { force: true }).catch(() => undefined);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
