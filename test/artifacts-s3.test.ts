/**
 * The S3 artifact store and each replica's content-addressed cache, against a real S3-compatible server
 * (s3rver) on loopback: PutObject, HeadObject, ranged GetObject, ListObjectsV2, multipart upload and delete,
 * a corrupted object refused by digest, concurrent loads downloading once, a restart reusing the cache, LRU
 * eviction by bytes that spares files in use, and a server that pushes to S3 and a second one that loads
 * from it. Requests are counted on the server's side.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { loadServerConfig } from '../src/config/server-config.js';
import { ArtifactCache } from '../src/registry/artifact-cache.js';
import { S3ArtifactStore, s3ClientConfig } from '../src/registry/s3-store.js';
import { isSwitchyardError } from '../src/errors.js';
import { mlp } from '../tools/onnx/zoo.js';
import { floats, startSwitchyard } from './helpers.js';
import { until } from './registry-helpers.js';
import { S3_CREDENTIALS, startS3, type TestS3 } from './s3-helpers.js';

const MIB = 1024 * 1024;
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('S3 artifact store with a local cache (s3rver on loopback)', () => {
  let s3: TestS3;
  let dir = '';
  let client: S3Client;
  const stores: S3ArtifactStore[] = [];

  before(async () => {
    s3 = await startS3();
    dir = await mkdtemp(join(tmpdir(), 'sy-s3-store-'));
    client = new S3Client({ ...s3ClientConfig({ endpoint: s3.endpoint, pathStyle: true }), credentials: S3_CREDENTIALS });
  });
  after(async () => {
    for (const s of stores) await s.close();
    client.destroy();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A store over its own cache directory `name` (a "replica"); `maxBytes` bounds the cache. */
  async function store(name: string, maxBytes = 1024 * MIB, prefix = 'models'): Promise<{ store: S3ArtifactStore; cache: ArtifactCache }> {
    const cache = await ArtifactCache.open({ dir: join(dir, name), maxBytes });
    const st = new S3ArtifactStore({
      url: `s3://${s3.bucket}/${prefix}`,
      cache,
      endpoint: s3.endpoint,
      pathStyle: true,
      partBytes: 5 * MIB,
      concurrency: 3,
      client,
    });
    stores.push(st);
    return { store: st, cache };
  }

  it('put stores the object under its digest (PutObject, HeadObject, ListObjectsV2) and the pusher reads it from its cache', async () => {
    const { store: st, cache } = await store('a');
    const bytes = randomBytes(300_000);
    const ref = await st.put(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]));
    const key = `models/${sha(bytes).slice(0, 2)}/${sha(bytes)}.onnx`;
    assert.deepEqual(ref, { uri: `s3://${s3.bucket}/${key}`, sha256: sha(bytes), size: bytes.length });
    const head = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    assert.equal(head.ContentLength, bytes.length);
    const list = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'models/' }));
    assert.ok(
      list.Contents?.some((o) => o.Key === key),
      'listed under the prefix',
    );
    const gets = s3.count('GET', key);
    const lease = await st.open(ref);
    assert.deepEqual(await readFile(lease.path), bytes);
    lease.release();
    assert.equal(s3.count('GET', key), gets, 'the pushing replica already holds the bytes: no download');
    assert.equal(cache.stats.fetches, 0);
    // The same bytes again: HEAD finds them, nothing is uploaded twice.
    const puts = s3.count('PUT', key);
    assert.deepEqual(await st.put(bytes), ref);
    assert.equal(s3.count('PUT', key), puts);
  });

  it('large artifacts go up in multipart and come down in parallel ranges, byte-exact', async () => {
    const { store: pusher } = await store('mp-push');
    const bytes = randomBytes(12 * MIB + 123);
    const ref = await pusher.put(Readable.from([bytes]));
    const key = ref.uri.slice(`s3://${s3.bucket}/`.length);
    assert.equal(s3.requests.filter((r) => r.startsWith(`POST /${s3.bucket}/${key}?uploads`)).length, 1, 'CreateMultipartUpload');
    assert.equal(s3.requests.filter((r) => r.startsWith(`PUT /${s3.bucket}/${key}?`) && r.includes('partNumber=')).length, 3, 'three 5 MiB parts');
    assert.equal(s3.requests.filter((r) => r.startsWith(`POST /${s3.bucket}/${key}?uploadId=`)).length, 1, 'CompleteMultipartUpload');

    const { store: reader, cache } = await store('mp-read');
    const before = s3.count('GET', key);
    const lease = await reader.open(ref);
    assert.equal(sha(await readFile(lease.path)), ref.sha256);
    lease.release();
    assert.equal(s3.count('GET', key) - before, 3, 'one ranged GET per 5 MiB part');
    assert.equal(cache.stats.fetchedBytes, bytes.length);
  });

  it('a corrupted object is refused by digest: SY_ERR_ARTIFACT_UNAVAILABLE, nothing cached', async () => {
    const { store: pusher } = await store('bad-push', 1024 * MIB, 'corrupt');
    const bytes = randomBytes(200_000);
    const ref = await pusher.put(bytes);
    const key = ref.uri.slice(`s3://${s3.bucket}/`.length);
    const evil = Buffer.from(bytes);
    evil[1234] = evil[1234]! ^ 0xff;
    await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: evil }));

    const { store: reader, cache } = await store('bad-read');
    await assert.rejects(reader.open(ref), (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_ARTIFACT_UNAVAILABLE' && /hashing to/.test(e.message));
    assert.equal(cache.stats.corrupt, 1);
    assert.equal(cache.has(ref.sha256), false);
    assert.deepEqual(await filesIn(join(dir, 'bad-read')), [], 'no file and no temp file left');
    // An object of another length is refused too, though its first bytes are the registered ones.
    await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: Buffer.concat([bytes, Buffer.from('x')]) }));
    await assert.rejects(reader.open(ref), (e: unknown) => isSwitchyardError(e) && e.code === 'SY_ERR_ARTIFACT_UNAVAILABLE');
    // Repaired in the store: the next load succeeds.
    await client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: bytes }));
    const lease = await reader.open(ref);
    assert.equal(sha(await readFile(lease.path)), ref.sha256);
    lease.release();
  });

  it('concurrent loads of one digest download it once; a restart finds it in the cache (no GET)', async () => {
    const { store: pusher } = await store('once-push');
    const bytes = randomBytes(7 * MIB);
    const ref = await pusher.put(bytes);
    const key = ref.uri.slice(`s3://${s3.bucket}/`.length);

    const { store: reader, cache } = await store('once-read');
    const before = s3.count('GET', key);
    const leases = await Promise.all(Array.from({ length: 8 }, () => reader.open(ref)));
    assert.equal(s3.count('GET', key) - before, 2, 'one download (two 5 MiB ranges) for eight callers');
    assert.equal(cache.stats.fetches, 1);
    assert.equal(new Set(leases.map((l) => l.path)).size, 1);
    for (const l of leases) l.release();

    // "Restart": a new cache over the same directory, with a temp file a dead process left behind.
    const orphan = join(dir, 'once-read', ref.sha256.slice(0, 2), '.tmp-999999999-deadbeef');
    await writeFile(orphan, 'partial');
    const again = await ArtifactCache.open({ dir: join(dir, 'once-read'), maxBytes: 1024 * MIB });
    assert.equal(again.has(ref.sha256), true);
    assert.equal(again.bytes, bytes.length);
    const restarted = new S3ArtifactStore({ url: `s3://${s3.bucket}/models`, cache: again, client, partBytes: 5 * MIB });
    const lease = await restarted.open(ref);
    lease.release();
    assert.equal(s3.count('GET', key) - before, 2, 'no GET after the restart');
    assert.equal(again.stats.hits, 1);
    assert.deepEqual(
      (await filesIn(join(dir, 'once-read'))).filter((f) => f.includes('.tmp-')),
      [],
      "the dead process's temp file is gone",
    );
  });

  it('the cache is bounded by bytes, least recently used first, and never evicts a file in use', async () => {
    const { store: pusher } = await store('lru-push');
    const refs = await Promise.all([0, 1, 2].map(() => pusher.put(randomBytes(100_000))));
    const [a, b, c] = refs as [(typeof refs)[0], (typeof refs)[0], (typeof refs)[0]];
    const { store: reader, cache } = await store('lru-read', 250_000);
    (await reader.open(a)).release();
    (await reader.open(b)).release();
    (await reader.open(a)).release(); // a is now more recent than b
    (await reader.open(c)).release();
    assert.deepEqual([cache.has(a.sha256), cache.has(b.sha256), cache.has(c.sha256)], [true, false, true], 'b, least recently used, evicted');
    assert.ok(cache.bytes <= 250_000);
    assert.deepEqual((await filesIn(join(dir, 'lru-read'))).length, 2, 'its file deleted');

    // Held leases survive eviction pressure; the bound is restored when they are released.
    const held = await reader.open(a);
    const heldC = await reader.open(c);
    const lb = await reader.open(b);
    assert.equal(cache.has(a.sha256) && cache.has(c.sha256) && cache.has(b.sha256), true, 'all three held: none evicted');
    assert.deepEqual(await readFile(held.path).then(sha), a.sha256);
    held.release();
    await until(() => !cache.has(a.sha256));
    assert.ok(cache.bytes <= 250_000);
    heldC.release();
    lb.release();
  });

  it('remove deletes the object and the cached copy', async () => {
    const { store: st, cache } = await store('rm');
    const ref = await st.put(randomBytes(1000));
    const key = ref.uri.slice(`s3://${s3.bucket}/`.length);
    await st.remove(ref);
    await assert.rejects(
      client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key })),
      (e: unknown) => (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404,
    );
    assert.equal(cache.has(ref.sha256), false);
    assert.equal(s3.count('DELETE', key), 1);
  });

  it('a server pushes to S3 and a replica with an empty cache loads from it; restarted, it loads from its cache', async () => {
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey });
    const data = join(dir, 'server');
    const s3cfg = { artifacts: `s3://${s3.bucket}/served`, s3Endpoint: s3.endpoint, s3PathStyle: true, database: `sqlite:${join(data, 'shared.db')}` };
    await mkdir(data, { recursive: true });
    const first = await startSwitchyard({ scorer: { versions: { 1: mlp(7) } } }, { config: { ...s3cfg, artifactCacheDir: join(data, 'cache-1') } });
    const v = await first.sy.registry.getVersion('scorer', 1);
    assert.match(v.artifact.uri, new RegExp(`^s3://${s3.bucket}/served/`));
    const key = v.artifact.uri.slice(`s3://${s3.bucket}/`.length);
    assert.equal(s3.count('GET', key), 0, 'the importing server inspected and loaded its own cached copy');
    await first.close();

    const infer = async (sy: typeof first): Promise<number> => {
      const r = await sy.sy.app.inject({
        method: 'POST',
        url: '/v2/models/scorer/infer',
        payload: { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 64], data: floats(64, 3) }] },
      });
      assert.equal(r.statusCode, 200, r.body);
      return (r.json() as { outputs: { data: number[] }[] }).outputs[0]!.data[0]!;
    };
    const second = await startSwitchyard({}, { config: { ...s3cfg, artifactCacheDir: join(data, 'cache-2') } });
    const score = await infer(second);
    assert.equal(s3.count('GET', key), 1, 'downloaded once by the new replica');
    await second.close();
    const third = await startSwitchyard({}, { config: { ...s3cfg, artifactCacheDir: join(data, 'cache-2') } });
    assert.equal(await infer(third), score);
    assert.equal(s3.count('GET', key), 1, 'restarted: served from its cache, no download');
    await third.close();
  });

  it('refuses malformed artifact settings naming the setting', () => {
    assert.throws(() => loadServerConfig({ artifacts: 'gs://bucket/x' }, {}), /artifacts.*s3:\/\/bucket\/prefix/);
    assert.throws(() => loadServerConfig({ s3Endpoint: 'minio:9000' }, {}), /s3Endpoint \(--s3-endpoint\): must start with http:\/\/ or https:\/\//);
    assert.throws(() => loadServerConfig({ s3PartMb: 1 }, {}), /s3PartMb/);
    assert.equal(loadServerConfig({}, { SWITCHYARD_ARTIFACTS: 's3://b-1/p', SWITCHYARD_S3_PATH_STYLE: '1' }).s3PathStyle, true);
    assert.throws(() => new S3ArtifactStore({ url: 's3://A_B/x', cache: null as unknown as ArtifactCache, client }), /not a valid S3 bucket name/);
  });
});

async function filesIn(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}
