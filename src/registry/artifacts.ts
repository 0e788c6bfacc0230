/**
 * @module
 * Artifact storage. `ArtifactStore` is the one seam every backend implements: `LocalArtifactStore` (files
 * on a disk the replicas share, or that only one replica has) and `S3ArtifactStore` (any S3-compatible object
 * store, read through a per-replica content-addressed cache). Both name bytes by their sha256: a directory
 * layout `DIR/ab/ab12….onnx`, written through a temp file in the same directory while hashing, then renamed
 * into place, so a reader never sees a partial file and identical bytes are stored once.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { access, mkdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { err } from '../errors.js';
import type { ArtifactRef } from './types.js';

export type ArtifactSource = Buffer | Uint8Array | Readable | NodeJS.ReadableStream | AsyncIterable<Uint8Array>;

/** A local file holding an artifact, valid until `release()` (a cache does not evict a leased file). */
export interface ArtifactLease {
  readonly path: string;
  /** Idempotent. */
  release(): void;
}

/**
 * Where model artifacts live. Contract: `put` streams (never holds a whole artifact in memory) and returns
 * only once the bytes are durable in the store; `open` returns a local file whose content hashes to
 * `ref.sha256` (fetching and verifying it first, for remote stores).
 */
export interface ArtifactStore {
  /** Store the bytes (streamed); fails with SY_ERR_BODY_TOO_LARGE beyond `maxBytes`. */
  put(data: ArtifactSource, maxBytes?: number): Promise<ArtifactRef>;
  /** A local file holding the artifact, leased: a cache keeps it until released. */
  open(ref: ArtifactRef): Promise<ArtifactLease>;
  /** Delete the stored bytes (callers make sure no version references them). */
  remove(ref: ArtifactRef): Promise<void>;
  /** Release clients and timers. */
  close(): Promise<void>;
}

const SHA256 = /^[0-9a-f]{64}$/;

/** Whether `s` is a lowercase hex sha256 digest. */
export function isSha256(s: string): boolean {
  return SHA256.test(s);
}

/** Hashes and counts the bytes passing through; errors past the byte limit. */
export class HashingCounter extends Transform {
  readonly #hash = createHash('sha256');
  readonly #max: number;
  readonly #tooLarge: () => Error;
  size = 0;

  constructor(max: number, tooLarge: () => Error = () => err('SY_ERR_BODY_TOO_LARGE', `artifact exceeds the limit of ${max} bytes`)) {
    super();
    this.#max = max;
    this.#tooLarge = tooLarge;
  }

  override _transform(chunk: Buffer | string, _enc: BufferEncoding, cb: TransformCallback): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.size += buf.length;
    if (this.size > this.#max) {
      cb(this.#tooLarge());
      return;
    }
    this.#hash.update(buf);
    cb(null, buf);
  }

  digest(): string {
    return this.#hash.digest('hex');
  }
}

/** A name for a temp file in `dir` that names this process (a later start removes those of dead processes). */
export function tempName(dir: string): string {
  return join(dir, `.tmp-${process.pid}-${randomBytes(8).toString('hex')}`);
}

function asStream(data: ArtifactSource): NodeJS.ReadableStream | AsyncIterable<Uint8Array> {
  if (Buffer.isBuffer(data) || data instanceof Uint8Array) return Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
  return data;
}

/**
 * Stream `data` into a temp file in `dir` while hashing it. Returns the temp path with the digest and size;
 * the caller renames it into place (or removes it). On failure nothing is left behind.
 */
export async function spool(dir: string, data: ArtifactSource, counter: HashingCounter): Promise<{ tmp: string; sha256: string; size: number }> {
  await mkdir(dir, { recursive: true });
  const tmp = tempName(dir);
  try {
    await pipeline(asStream(data), counter, createWriteStream(tmp, { flags: 'wx' }));
    return { tmp, sha256: counter.digest(), size: counter.size };
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw e;
  }
}

/** `DIR/ab/<sha256><ext>`: where a content-addressed directory keeps these bytes. */
export function contentPath(dir: string, sha256: string, ext: string): string {
  if (!isSha256(sha256)) throw err('SY_ERR_BAD_REQUEST', `not a sha256 digest: "${sha256}"`);
  return join(dir, sha256.slice(0, 2), `${sha256}${ext}`);
}

/** Move a verified temp file to its content address; when the bytes are already there, drop the temp file. */
export async function commit(tmp: string, target: string): Promise<void> {
  if (await exists(target)) {
    await unlink(tmp);
    return;
  }
  await mkdir(join(target, '..'), { recursive: true });
  await rename(tmp, target);
}

const NO_RELEASE = (): void => undefined;

export class LocalArtifactStore implements ArtifactStore {
  readonly #dir: string;
  readonly #ext: string;

  constructor(dir: string, options: { extension?: string } = {}) {
    this.#dir = resolve(dir);
    this.#ext = options.extension ?? '.onnx';
  }

  get dir(): string {
    return this.#dir;
  }

  /** Where bytes with this digest live. */
  pathFor(sha256: string): string {
    return contentPath(this.#dir, sha256, this.#ext);
  }

  async put(data: ArtifactSource, maxBytes = Number.MAX_SAFE_INTEGER): Promise<ArtifactRef> {
    const { tmp, sha256, size } = await spool(this.#dir, data, new HashingCounter(maxBytes));
    const target = this.pathFor(sha256);
    try {
      await commit(tmp, target);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    return { uri: pathToFileURL(target).href, sha256, size };
  }

  async open(ref: ArtifactRef): Promise<ArtifactLease> {
    return { path: await localFile(ref, 'this server stores artifacts on local disk; start it with --artifacts s3://… to read them'), release: NO_RELEASE };
  }

  async remove(ref: ArtifactRef): Promise<void> {
    if (!ref.uri.startsWith('file:')) return;
    await rm(fileURLToPath(ref.uri), { force: true });
  }

  async close(): Promise<void> {
    // nothing held
  }
}

/** The file a `file:` ref names, checked to exist; `otherwise` explains refs of another store. */
export async function localFile(ref: ArtifactRef, otherwise: string): Promise<string> {
  if (!ref.uri.startsWith('file:')) throw err('SY_ERR_ARTIFACT_UNAVAILABLE', `artifact ${ref.sha256} is stored at ${ref.uri}: ${otherwise}`);
  const path = fileURLToPath(ref.uri);
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new Error('not a file');
  } catch {
    throw err('SY_ERR_ARTIFACT_UNAVAILABLE', `artifact ${ref.sha256} is missing from the artifact store (${path})`);
  }
  return path;
}

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
