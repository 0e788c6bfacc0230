/**
 * @module
 * Artifact storage. `ArtifactStore` is the seam for other backends (an object store later); `LocalArtifactStore`
 * keeps files content-addressed by sha256 under a directory (`DIR/ab/ab12….onnx`), written through a temp file
 * in the same directory while hashing, then renamed into place. Identical bytes are stored once.
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

export type ArtifactSource = Buffer | Uint8Array | Readable | NodeJS.ReadableStream;

export interface ArtifactStore {
  /** Store the bytes (streamed); fails with SY_ERR_BODY_TOO_LARGE beyond `maxBytes`. */
  put(data: ArtifactSource, maxBytes?: number): Promise<ArtifactRef>;
  /** A local file holding the artifact (a cached download for remote stores). */
  localPath(ref: ArtifactRef): Promise<string>;
  /** Delete the stored bytes (callers make sure no version references them). */
  remove?(ref: ArtifactRef): Promise<void>;
}

const SHA256 = /^[0-9a-f]{64}$/;

/** Hashes and counts the bytes passing through; errors past the byte limit. */
class HashingCounter extends Transform {
  readonly #hash = createHash('sha256');
  readonly #max: number;
  size = 0;

  constructor(max: number) {
    super();
    this.#max = max;
  }

  override _transform(chunk: Buffer | string, _enc: BufferEncoding, cb: TransformCallback): void {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.size += buf.length;
    if (this.size > this.#max) {
      cb(err('SY_ERR_BODY_TOO_LARGE', `artifact exceeds the limit of ${this.#max} bytes`));
      return;
    }
    this.#hash.update(buf);
    cb(null, buf);
  }

  digest(): string {
    return this.#hash.digest('hex');
  }
}

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
    if (!SHA256.test(sha256)) throw err('SY_ERR_BAD_REQUEST', `not a sha256 digest: "${sha256}"`);
    return join(this.#dir, sha256.slice(0, 2), `${sha256}${this.#ext}`);
  }

  async put(data: ArtifactSource, maxBytes = Number.MAX_SAFE_INTEGER): Promise<ArtifactRef> {
    await mkdir(this.#dir, { recursive: true });
    const tmp = join(this.#dir, `.tmp-${process.pid}-${randomBytes(8).toString('hex')}`);
    const counter = new HashingCounter(maxBytes);
    const source = Buffer.isBuffer(data) || data instanceof Uint8Array ? Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]) : data;
    try {
      await pipeline(source as NodeJS.ReadableStream, counter, createWriteStream(tmp, { flags: 'wx' }));
      const sha256 = counter.digest();
      const target = this.pathFor(sha256);
      if (await exists(target)) {
        await unlink(tmp);
      } else {
        await mkdir(join(this.#dir, sha256.slice(0, 2)), { recursive: true });
        await rename(tmp, target);
      }
      return { uri: pathToFileURL(target).href, sha256, size: counter.size };
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
  }

  async localPath(ref: ArtifactRef): Promise<string> {
    if (!ref.uri.startsWith('file:')) throw err('SY_ERR_INTERNAL', `local artifact store cannot read "${ref.uri}"`);
    const path = fileURLToPath(ref.uri);
    try {
      const s = await stat(path);
      if (!s.isFile()) throw new Error('not a file');
    } catch {
      throw err('SY_ERR_INTERNAL', `artifact ${ref.sha256} is missing from the artifact store (${path})`);
    }
    return path;
  }

  async remove(ref: ArtifactRef): Promise<void> {
    if (!ref.uri.startsWith('file:')) return;
    await rm(fileURLToPath(ref.uri), { force: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
