/**
 * @module
 * The optional per-model result cache: outputs keyed by a digest of tenant, model, version, artifact digest and
 * the canonical input bytes, held in memory (an LRU bounded in bytes, per-entry TTL) or in Redis (shared by
 * replicas, `SET … PX`). Only successful results are stored (callers never `set` errors). A version change
 * changes the key, and so does a model recreated under an old version number (the artifact digest differs).
 * Neither backend ever throws from `get`/`set`: failures count in `stats().errors` and read as misses.
 */
import { createHash, type Hash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { dtypeFromV2, elementCount, type NumericArray, type Tensor } from '../tensor/index.js';

export interface CacheKeyParts {
  /** '' for none/platform. */
  readonly tenant: string;
  readonly model: string;
  readonly version: number;
  /** The version's artifact digest: a recreated model reusing a version number never hits the old entries. */
  readonly artifactSha256: string;
  /** In the model's signature order (names are implied by the order). */
  readonly inputs: readonly Tensor[];
}

const KEY_DOMAIN = 'switchyard-result-cache-v1';
const CHUNK = 16 * 1024;
/** Shared scratch: cacheKey is synchronous, so one buffer serves every call. */
const SCRATCH = Buffer.allocUnsafe(CHUNK);

/** Buffers small fields (length prefixes, short strings) and feeds the hash in chunks; large arrays go straight in. */
class HashWriter {
  private readonly buf = SCRATCH;
  private pos = 0;
  constructor(private readonly hash: Hash) {}

  private room(n: number): void {
    if (this.pos + n > CHUNK) this.flush();
  }
  flush(): void {
    if (this.pos > 0) this.hash.update(this.buf.subarray(0, this.pos));
    this.pos = 0;
  }
  u32(n: number): void {
    this.room(4);
    this.pos = this.buf.writeUInt32LE(n, this.pos);
  }
  f64(n: number): void {
    this.room(8);
    this.pos = this.buf.writeDoubleLE(n, this.pos);
  }
  /** 4-byte UTF-8 length, then the UTF-8 bytes. */
  str(s: string): void {
    const len = Buffer.byteLength(s, 'utf8');
    this.u32(len);
    if (len > CHUNK / 4) {
      this.flush();
      this.hash.update(s, 'utf8');
      return;
    }
    this.room(len);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }
  /** 4-byte length, then the bytes: a BYTES element (the same key as `str` of the text it encodes). */
  element(b: Uint8Array): void {
    this.u32(b.byteLength);
    this.#raw(b);
  }
  /** 8-byte length, then the bytes (large ones bypass the chunk). */
  bytes(b: Uint8Array): void {
    this.f64(b.byteLength);
    this.#raw(b);
  }
  #raw(b: Uint8Array): void {
    if (b.byteLength > CHUNK / 4) {
      this.flush();
      this.hash.update(b);
      return;
    }
    this.room(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }
}

/** The exact bytes of a typed array (its view, never its whole buffer). */
function byteView(a: NumericArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * A fixed-length digest (sha256, base64url, 43 chars) over an unambiguous encoding of all parts: a domain tag,
 * length-prefixed UTF-8 strings, the version, and per input its dtype name, rank and dims, then either the
 * typed array's raw bytes (little-endian as in memory, length-prefixed) or the element count and each BYTES
 * element length-prefixed.
 */
export function cacheKey(parts: CacheKeyParts): string {
  const hash = createHash('sha256');
  const w = new HashWriter(hash);
  w.str(KEY_DOMAIN);
  w.str(parts.tenant);
  w.str(parts.model);
  w.f64(parts.version);
  w.str(parts.artifactSha256);
  w.u32(parts.inputs.length);
  for (const t of parts.inputs) {
    w.str(t.dtype.v2);
    w.u32(t.shape.length);
    for (const d of t.shape) w.f64(d);
    if (t.dtype.array === null) {
      const data = t.data as Uint8Array[];
      w.f64(data.length);
      for (const b of data) w.element(b);
    } else {
      w.bytes(byteView(t.data as NumericArray));
    }
  }
  w.flush();
  return hash.digest('base64url');
}

export interface CacheStats {
  hits: number;
  misses: number;
  sets: number;
  evictions: number;
  errors: number;
  entries: number;
  bytes: number;
}

export interface ResultCache {
  readonly kind: 'memory' | 'redis';
  /** The cached outputs, or undefined on a miss, an expired entry or (Redis) any error/timeout (counted, never thrown). */
  get(key: string): Promise<Tensor[] | undefined>;
  /**
   * Store outputs for ttlMs (a finite number > 0; anything else stores nothing). Never throws; Redis writes are
   * fire-and-forget (errors counted). Entries larger than maxEntryBytes are skipped. The cache keeps its own copy.
   */
  set(key: string, outputs: readonly Tensor[], ttlMs: number): void;
  /** Drop every entry (memory); a no-op for Redis (entries expire by TTL, keys of old versions are never read). */
  clear(): void;
  stats(): CacheStats;
  close(): Promise<void>;
}

const ENTRY_OVERHEAD = 64;
const TENSOR_OVERHEAD = 48;
const ELEMENT_OVERHEAD = 96;

/** Approximate heap bytes of an entry: tensor data (each BYTES element's bytes and object) + key + fixed overheads. */
function entrySize(key: string, outputs: readonly Tensor[]): number {
  let n = ENTRY_OVERHEAD + key.length * 2;
  for (const t of outputs) {
    n += TENSOR_OVERHEAD + t.shape.length * 8;
    if (t.dtype.array === null) for (const b of t.data as Uint8Array[]) n += ELEMENT_OVERHEAD + b.byteLength;
    else n += (t.data as NumericArray).byteLength;
  }
  return n;
}

/** A private, frozen copy (typed arrays and BYTES elements copied to exactly their own storage). */
function copyTensor(t: Tensor): Tensor {
  const data = t.dtype.array === null ? (Object.freeze((t.data as Uint8Array[]).map((b) => b.slice())) as Uint8Array[]) : (t.data as NumericArray).slice();
  return Object.freeze({ dtype: t.dtype, shape: Object.freeze([...t.shape]), data });
}

function validTtl(ttlMs: number): boolean {
  return Number.isFinite(ttlMs) && ttlMs > 0;
}

export interface MemoryCacheOptions {
  /** LRU byte bound; the size of an entry is the sum of tensor byte lengths + key + a small overhead. */
  readonly maxBytes: number;
  /** Larger entries are not stored. @default maxBytes / 8 */
  readonly maxEntryBytes?: number;
}

interface MemoryEntry {
  readonly outputs: readonly Tensor[];
}

/**
 * In-process LRU bounded by bytes with a per-entry TTL (lru-cache; expired entries are dropped on access and
 * by `stats()`). `get` returns the cached tensors themselves, not copies (the cheaper option): callers only read
 * them to encode a response and must not mutate them. Tensor objects, shapes and string arrays are frozen;
 * typed arrays cannot be.
 */
export class MemoryResultCache implements ResultCache {
  readonly kind = 'memory' as const;
  private readonly lru: LRUCache<string, MemoryEntry>;
  private readonly maxEntryBytes: number;
  private hits = 0;
  private misses = 0;
  private sets = 0;
  private evictions = 0;

  constructor(opts: MemoryCacheOptions) {
    if (!(Number.isFinite(opts.maxBytes) && opts.maxBytes >= 1)) throw new Error(`result cache maxBytes must be >= 1, got ${opts.maxBytes}`);
    const maxBytes = Math.floor(opts.maxBytes);
    this.maxEntryBytes = Math.min(maxBytes, opts.maxEntryBytes ?? Math.floor(maxBytes / 8));
    this.lru = new LRUCache<string, MemoryEntry>({
      maxSize: maxBytes,
      maxEntrySize: maxBytes,
      // The size is computed in set() (before copying) and passed explicitly; this is only a fallback.
      sizeCalculation: (v, k) => entrySize(k, v.outputs),
      dispose: (_v, _k, reason) => {
        if (reason === 'evict') this.evictions++;
      },
    });
  }

  get(key: string): Promise<Tensor[] | undefined> {
    const e = this.lru.get(key);
    if (e === undefined) {
      this.misses++;
      return Promise.resolve(undefined);
    }
    this.hits++;
    return Promise.resolve(e.outputs.slice());
  }

  set(key: string, outputs: readonly Tensor[], ttlMs: number): void {
    if (!validTtl(ttlMs)) return;
    const size = entrySize(key, outputs);
    if (size > this.maxEntryBytes) return;
    this.lru.set(key, { outputs: Object.freeze(outputs.map(copyTensor)) }, { ttl: Math.ceil(ttlMs), size });
    this.sets++;
  }

  clear(): void {
    this.lru.clear();
  }

  stats(): CacheStats {
    this.lru.purgeStale();
    return {
      hits: this.hits,
      misses: this.misses,
      sets: this.sets,
      evictions: this.evictions,
      errors: 0,
      entries: this.lru.size,
      bytes: this.lru.calculatedSize,
    };
  }

  close(): Promise<void> {
    this.lru.clear();
    return Promise.resolve();
  }
}

// ---- Binary serialization (Redis) ----
//
// "SYC1" | u32 LE header length | JSON header [{d: dtype, s: shape, n: payload bytes}] | pad to 8 |
// per tensor: payload, padded to 8. Numeric payloads are the raw little-endian elements; BYTES payloads are
// per element a u32 LE length and the bytes.

const MAGIC = Buffer.from('SYC1', 'latin1');
const ALIGN = 8;
const pad = (n: number): number => (n + ALIGN - 1) & ~(ALIGN - 1);

interface HeaderEntry {
  d: string;
  s: number[];
  n: number;
}

/** Binary serialization used by the Redis cache (one allocation). */
export function encodeOutputs(outputs: readonly Tensor[]): Buffer {
  const header: HeaderEntry[] = [];
  const encoded: (Uint8Array | Uint8Array[])[] = [];
  for (const t of outputs) {
    if (t.dtype.array === null) {
      const data = t.data as Uint8Array[];
      let n = 0;
      for (const b of data) n += 4 + b.byteLength;
      header.push({ d: t.dtype.v2, s: [...t.shape], n });
      encoded.push(data);
    } else {
      const bytes = byteView(t.data as NumericArray);
      header.push({ d: t.dtype.v2, s: [...t.shape], n: bytes.byteLength });
      encoded.push(bytes);
    }
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  let total = pad(8 + json.length);
  for (const h of header) total += pad(h.n);
  const out = Buffer.alloc(total);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(json.length, 4);
  json.copy(out, 8);
  let o = pad(8 + json.length);
  for (let i = 0; i < encoded.length; i++) {
    const e = encoded[i]!;
    if (e instanceof Uint8Array) {
      out.set(e, o);
    } else {
      let p = o;
      for (const b of e) {
        out.writeUInt32LE(b.byteLength, p);
        out.set(b, p + 4);
        p += 4 + b.byteLength;
      }
    }
    o += pad(header[i]!.n);
  }
  return out;
}

function malformed(why: string): Error {
  return new Error(`malformed cached outputs: ${why}`);
}

/**
 * Inverse of {@link encodeOutputs}; throws on malformed input. Numeric data are views into `buf` when aligned
 * for the element size, else copies; BYTES elements are views into `buf`.
 */
export function decodeOutputs(buf: Buffer): Tensor[] {
  if (buf.length < 8 || !buf.subarray(0, 4).equals(MAGIC)) throw malformed('bad magic');
  const hlen = buf.readUInt32LE(4);
  if (8 + hlen > buf.length) throw malformed('truncated header');
  let header: unknown;
  try {
    header = JSON.parse(buf.toString('utf8', 8, 8 + hlen));
  } catch {
    throw malformed('header is not JSON');
  }
  if (!Array.isArray(header)) throw malformed('header is not an array');
  const out: Tensor[] = [];
  let o = pad(8 + hlen);
  for (const h of header as unknown[]) {
    if (typeof h !== 'object' || h === null) throw malformed('header entry is not an object');
    const { d, s, n } = h as Partial<Record<keyof HeaderEntry, unknown>>;
    const dtype = typeof d === 'string' ? dtypeFromV2(d) : undefined;
    if (dtype === undefined) throw malformed(`unknown dtype ${String(d)}`);
    if (!Array.isArray(s) || !s.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) throw malformed('bad shape');
    if (!Number.isSafeInteger(n) || (n as number) < 0) throw malformed('bad length');
    const shape = s as number[];
    const len = n as number;
    if (o + len > buf.length) throw malformed('truncated payload');
    const count = elementCount(shape);
    if (dtype.array === null) {
      const data: Uint8Array[] = [];
      let p = o;
      const end = o + len;
      while (p < end) {
        if (p + 4 > end) throw malformed('truncated BYTES element length');
        const sl = buf.readUInt32LE(p);
        p += 4;
        if (p + sl > end) throw malformed('truncated BYTES element');
        data.push(new Uint8Array(buf.buffer, buf.byteOffset + p, sl)); // a view, as a plain Uint8Array
        p += sl;
      }
      if (data.length !== count) throw malformed(`shape implies ${count} elements, payload holds ${data.length}`);
      out.push({ dtype, shape, data });
    } else {
      if (len !== count * dtype.size) throw malformed(`shape implies ${count * dtype.size} bytes, payload holds ${len}`);
      const at = buf.byteOffset + o;
      let data: NumericArray;
      if (at % dtype.size === 0) {
        data = new dtype.array(buf.buffer, at, count);
      } else {
        data = new dtype.array(count);
        byteView(data).set(buf.subarray(o, o + len));
      }
      out.push({ dtype, shape, data });
    }
    o += pad(len);
  }
  if (o !== buf.length) throw malformed('trailing bytes');
  return out;
}

export interface RedisCacheOptions {
  /** Not owned: `close()` leaves it open. Best configured to fail fast (no offline queue). */
  readonly redis: Redis;
  /** @default "sy:cache:" */
  readonly prefix?: string;
  /** A get slower than this is a miss (and counts an error). @default 50 @unit milliseconds */
  readonly timeoutMs?: number;
  /** Larger serialized entries are not stored. @default 1 MiB */
  readonly maxEntryBytes?: number;
}

const TIMED_OUT = Symbol('timed out');

/**
 * Shared cache in Redis: `SET prefix+key <encodeOutputs> PX ttl`, read with GETBUFFER raced against
 * `timeoutMs`. Every get counts a hit or a miss; failures and timeouts also count in `errors`. `sets` counts
 * writes Redis acknowledged. `entries`/`bytes` are not tracked (0). `get` returns fresh tensors per call.
 */
export class RedisResultCache implements ResultCache {
  readonly kind = 'redis' as const;
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly maxEntryBytes: number;
  private closed = false;
  private hits = 0;
  private misses = 0;
  private sets = 0;
  private errors = 0;

  constructor(opts: RedisCacheOptions) {
    this.redis = opts.redis;
    this.prefix = opts.prefix ?? 'sy:cache:';
    this.timeoutMs = opts.timeoutMs ?? 50;
    this.maxEntryBytes = opts.maxEntryBytes ?? 1024 * 1024;
  }

  async get(key: string): Promise<Tensor[] | undefined> {
    if (this.closed) {
      this.misses++;
      return undefined;
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      const reply = this.redis.getBuffer(this.prefix + key);
      const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), this.timeoutMs);
      });
      const r = await Promise.race([reply, deadline]);
      if (r === TIMED_OUT) {
        reply.catch(() => undefined); // a late failure must not become an unhandled rejection
        this.errors++;
        this.misses++;
        return undefined;
      }
      if (r === null) {
        this.misses++;
        return undefined;
      }
      const outputs = decodeOutputs(r);
      this.hits++;
      return outputs;
    } catch {
      this.errors++;
      this.misses++;
      return undefined;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  set(key: string, outputs: readonly Tensor[], ttlMs: number): void {
    if (this.closed || !validTtl(ttlMs)) return;
    try {
      const buf = encodeOutputs(outputs);
      if (buf.length > this.maxEntryBytes) return;
      this.redis.set(this.prefix + key, buf, 'PX', Math.ceil(ttlMs)).then(
        () => {
          this.sets++;
        },
        () => {
          this.errors++;
        },
      );
    } catch {
      this.errors++;
    }
  }

  clear(): void {}

  stats(): CacheStats {
    return { hits: this.hits, misses: this.misses, sets: this.sets, evictions: 0, errors: this.errors, entries: 0, bytes: 0 };
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
