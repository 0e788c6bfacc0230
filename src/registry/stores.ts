/**
 * @module
 * Picks the artifact store from the configured URL: a directory (default `<dataDir>/artifacts`, or
 * `file:///dir`) or `s3://bucket/prefix` read through a local cache.
 */
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ArtifactCache } from './artifact-cache.js';
import { LocalArtifactStore, type ArtifactStore } from './artifacts.js';
import type { S3StoreOptions } from './s3-store.js';

export interface ArtifactStoreSettings {
  /** '' = `<dataDir>/artifacts`; a directory or file:///dir; s3://bucket/prefix. */
  url: string;
  dataDir: string;
  /** Cache of s3:// artifacts; '' = `<dataDir>/artifact-cache`. */
  cacheDir: string;
  cacheMaxBytes: number;
  s3?: Omit<S3StoreOptions, 'url' | 'cache' | 'logger'>;
  logger?: Logger;
}

export async function openArtifactStore(s: ArtifactStoreSettings): Promise<ArtifactStore> {
  if (s.url.startsWith('s3://')) {
    const cache = await ArtifactCache.open({
      dir: s.cacheDir || join(s.dataDir, 'artifact-cache'),
      maxBytes: s.cacheMaxBytes,
      ...(s.logger ? { logger: s.logger } : {}),
    });
    // The AWS SDK loads only when S3 is configured.
    const { S3ArtifactStore } = await import('./s3-store.js');
    return new S3ArtifactStore({ ...s.s3, url: s.url, cache, ...(s.logger ? { logger: s.logger } : {}) });
  }
  const dir = s.url === '' ? join(s.dataDir, 'artifacts') : s.url.startsWith('file:') ? fileURLToPath(s.url) : resolve(s.url);
  return new LocalArtifactStore(dir);
}
