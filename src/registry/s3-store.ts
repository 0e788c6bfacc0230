/**
 * @module
 * Artifacts in any S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2, …), read through the replica's
 * content-addressed {@link ArtifactCache}.
 *
 * Layout: `s3://BUCKET/PREFIX/ab/<sha256>.onnx`, the registry's digest naming the object, so identical bytes
 * are stored once and a replica's cache file is named by the same key.
 *
 * A push streams the body into the cache while hashing it (the digest names the object, so it must be known
 * before the object is named; the pushing replica inspects and usually serves the file next), then uploads the
 * file in parts (`partBytes`, `concurrency` parts in flight: memory stays at their product, whatever the
 * model's size). An object already stored under the digest with the same size is not uploaded again.
 *
 * A load downloads `concurrency` byte ranges in parallel (one stream per range: a single S3 stream is slow)
 * and hands them on in order, so the cache hashes them as they arrive and verifies the digest before the file
 * becomes visible. One download per digest at a time, however many versions or requests wait for it.
 */
import { createReadStream } from 'node:fs';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Logger } from 'pino';
import { err } from '../errors.js';
import type { ArtifactCache } from './artifact-cache.js';
import { type ArtifactLease, type ArtifactSource, type ArtifactStore, localFile } from './artifacts.js';
import type { ArtifactRef } from './types.js';

/** `s3://bucket/optional/prefix` → its parts; anything else → a message saying what is wrong. */
export function parseS3Url(url: string): { bucket: string; prefix: string } | string {
  const m = /^s3:\/\/([^/?#]+)(\/[^?#]*)?$/.exec(url);
  if (!m) return 'must look like s3://bucket or s3://bucket/prefix';
  const bucket = m[1]!;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) return `"${bucket}" is not a valid S3 bucket name (3-63 characters: a-z, 0-9, dot, hyphen)`;
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { bucket, prefix: prefix === '' ? '' : `${prefix}/` };
}

export interface S3StoreOptions {
  /** `s3://bucket/prefix` where pushes go. */
  url: string;
  /** The replica's local cache (shared with nothing else). */
  cache: ArtifactCache;
  /** S3 API endpoint for non-AWS servers, e.g. `http://minio:9000`; '' = AWS (or AWS_ENDPOINT_URL_S3). */
  endpoint?: string;
  /** '' = the SDK's (AWS_REGION, the profile); us-east-1 when an endpoint is set and none is found. */
  region?: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most non-AWS servers need. */
  pathStyle?: boolean;
  /**
   * `when-required`: send and check checksums only where S3 requires them (works with every S3-compatible
   * server; the cache verifies each download's sha256 anyway). `when-supported`: the SDK's default on AWS
   * (CRC32 on every upload), which some non-AWS servers store wrongly or reject.
   */
  checksum?: 'when-required' | 'when-supported';
  /** Size of one upload part and one download range, bytes. Default 16 MiB (S3's minimum part is 5 MiB). */
  partBytes?: number;
  /** Parts or ranges in flight at once. Default 4. */
  concurrency?: number;
  logger?: Logger;
  /** A client built elsewhere (tests); else one from the options above and the AWS environment. */
  client?: S3Client;
}

const MIB = 1024 * 1024;

export class S3ArtifactStore implements ArtifactStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly #cache: ArtifactCache;
  readonly #client: S3Client;
  readonly #partBytes: number;
  readonly #concurrency: number;
  readonly #logger: Logger | undefined;

  constructor(opts: S3StoreOptions) {
    const where = parseS3Url(opts.url);
    if (typeof where === 'string') throw err('SY_ERR_CONFIG_INVALID', `artifacts: ${where}`);
    this.bucket = where.bucket;
    this.prefix = where.prefix;
    this.#cache = opts.cache;
    this.#partBytes = Math.max(5 * MIB, opts.partBytes ?? 16 * MIB);
    this.#concurrency = Math.max(1, opts.concurrency ?? 4);
    this.#logger = opts.logger;
    this.#client = opts.client ?? new S3Client(s3ClientConfig(opts));
  }

  /** The object key of bytes with this digest. */
  keyFor(sha256: string): string {
    return `${this.prefix}${sha256.slice(0, 2)}/${sha256}.onnx`;
  }

  async put(data: ArtifactSource, maxBytes = Number.MAX_SAFE_INTEGER): Promise<ArtifactRef> {
    const held = await this.#cache.ingest(data, maxBytes);
    try {
      const key = this.keyFor(held.sha256);
      if ((await this.#storedSize(key)) !== held.size) {
        const upload = new Upload({
          client: this.#client,
          partSize: this.#partBytes,
          queueSize: this.#concurrency,
          leavePartsOnError: false,
          params: { Bucket: this.bucket, Key: key, Body: createReadStream(held.path), ContentType: 'application/octet-stream' },
        });
        await upload.done().catch((e: unknown) => Promise.reject(unavailable(`could not upload to s3://${this.bucket}/${key}`, e)));
      }
      return { uri: `s3://${this.bucket}/${key}`, sha256: held.sha256, size: held.size };
    } finally {
      held.release();
    }
  }

  async open(ref: ArtifactRef): Promise<ArtifactLease> {
    if (ref.uri.startsWith('file:')) {
      // Registered before the store moved to S3: still served while this replica has the file.
      return { path: await localFile(ref, ''), release: () => undefined };
    }
    const { bucket, key } = objectOf(ref);
    return this.#cache.acquire(ref.sha256, ref.size, () => this.#download(bucket, key, ref.size));
  }

  async remove(ref: ArtifactRef): Promise<void> {
    await this.#cache.remove(ref.sha256);
    if (!ref.uri.startsWith('s3:')) return;
    const { bucket, key } = objectOf(ref);
    await this.#client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  }

  async close(): Promise<void> {
    this.#client.destroy();
  }

  /** Size of the stored object, or -1 when there is none. */
  async #storedSize(key: string): Promise<number> {
    try {
      const h = await this.#client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return h.ContentLength ?? -1;
    } catch (e) {
      // 403: without s3:ListBucket, S3 answers a HEAD of a missing object with 403; the upload says if access is denied.
      if (notFound(e) || (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 403) return -1;
      throw unavailable(`could not reach s3://${this.bucket}/${key}`, e);
    }
  }

  /** The object's bytes in order, `concurrency` ranges downloading at once (at most that many held). */
  async *#download(bucket: string, key: string, size: number): AsyncGenerator<Uint8Array> {
    const part = this.#partBytes;
    const parts = Math.max(1, Math.ceil(size / part));
    const abort = new AbortController();
    const pending = new Map<number, Promise<Uint8Array>>();
    let next = 0;
    const range = async (i: number): Promise<Uint8Array> => {
      const first = i * part;
      const last = Math.min(size, first + part) - 1;
      const want = last - first + 1;
      try {
        const r = await this.#client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(size > 0 ? { Range: `bytes=${first}-${last}` } : {}) }), {
          abortSignal: abort.signal,
        });
        const total = /\/(\d+)$/.exec(r.ContentRange ?? '')?.[1];
        if (total !== undefined && Number(total) !== size) {
          throw err('SY_ERR_ARTIFACT_UNAVAILABLE', `s3://${bucket}/${key} holds ${total} bytes, not the registered ${size}; refused`);
        }
        const bytes = await r.Body!.transformToByteArray();
        // A longer body than asked for is cut by the cache's size check; a shorter one fails here.
        if (bytes.length < want) throw new Error(`range ${first}-${last} returned ${bytes.length} bytes`);
        return bytes;
      } catch (e) {
        throw unavailable(`could not download s3://${bucket}/${key}`, e);
      }
    };
    try {
      for (let i = 0; i < parts; i++) {
        while (next < parts && pending.size < this.#concurrency) {
          const p = range(next);
          p.catch(() => undefined);
          pending.set(next++, p);
        }
        const bytes = await pending.get(i)!;
        pending.delete(i);
        yield bytes;
      }
    } finally {
      if (pending.size > 0) abort.abort();
    }
    this.#logger?.debug({ bucket, key, size, parts }, 'artifact downloaded');
  }
}

/** The S3 client's settings from the store options; credentials come from the AWS environment (never flags). */
export function s3ClientConfig(opts: Pick<S3StoreOptions, 'endpoint' | 'region' | 'pathStyle' | 'checksum'>): S3ClientConfig {
  const checksum = opts.checksum === 'when-supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED';
  const region = opts.region || process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'] || (opts.endpoint ? 'us-east-1' : undefined);
  return {
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    ...(region ? { region } : {}),
    forcePathStyle: opts.pathStyle === true,
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
    maxAttempts: 3,
  };
}

function objectOf(ref: ArtifactRef): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(ref.uri);
  if (!m) throw err('SY_ERR_ARTIFACT_UNAVAILABLE', `artifact ${ref.sha256} is stored at ${ref.uri}, which this server cannot read`);
  return { bucket: m[1]!, key: m[2]! };
}

function notFound(e: unknown): boolean {
  const x = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return x.name === 'NotFound' || x.name === 'NoSuchKey' || x.$metadata?.httpStatusCode === 404;
}

function unavailable(what: string, cause: unknown): Error {
  if ((cause as { code?: string }).code === 'SY_ERR_ARTIFACT_UNAVAILABLE') return cause as Error;
  const reason = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
  return err('SY_ERR_ARTIFACT_UNAVAILABLE', `${what}: ${reason}`, { cause });
}
