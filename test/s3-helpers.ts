/**
 * A real S3-compatible server for tests and benchmarks: s3rver (the S3 REST API over a directory) on a free
 * port, one bucket, and a count of the requests it served, by method and path (the server side's own view:
 * "downloaded once" means one GET per range it saw).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage, Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

/** s3rver's fixed credentials (it checks request signatures against them). */
export const S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface TestS3 {
  /** http://ADDRESS:PORT */
  endpoint: string;
  bucket: string;
  /** Requests seen, in order: `GET /bucket/key`, `PUT /bucket/key?partNumber=…`. */
  readonly requests: string[];
  /** Requests whose method is `method` and whose path (before `?`) ends with `suffix`. */
  count(method: string, suffix: string): number;
  close(): Promise<void>;
}

/** Start s3rver on `address` (default loopback), port 0, with `bucket`; files in a temp dir removed on close. */
export async function startS3(bucket = 'sy-models', address = '127.0.0.1'): Promise<TestS3> {
  const dir = await mkdtemp(join(tmpdir(), 'sy-s3-'));
  const server = new S3rver({ address, port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = await server.run();
  const requests: string[] = [];
  (server as unknown as { httpServer: Server }).httpServer.on('request', (req: IncomingMessage) => requests.push(`${req.method} ${req.url}`));
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  return {
    endpoint: `http://${address}:${port}`,
    bucket,
    requests,
    count(method, suffix) {
      return requests.filter((r) => {
        const [m, url = ''] = r.split(' ');
        return m === method && url.split('?')[0]!.endsWith(suffix);
      }).length;
    },
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The environment a Switchyard process needs to reach `s3` (credentials as AWS's usual variables). */
export function s3Env(): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3_CREDENTIALS.secretAccessKey,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
}
