/**
 * @module
 * Imports a Triton-style model repository directory into the registry at start: each model directory becomes a
 * registered model (config.json/yaml as its serving config, load policy `preload`), each numbered version
 * directory a version with the same number. Idempotent: versions already registered with the same artifact
 * are skipped, so restarting on the same repository changes nothing. Without a `version_policy` in the config,
 * the Triton default (latest 1) is written into the registered config so the served set stays as on disk.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { isSwitchyardError } from '../errors.js';
import type { CreateModelInput, ModelRecord, PushVersionInput, UpdateModelInput, VersionRecord } from '../registry/index.js';
import { scanRepository } from './repository.js';

const ACTOR = 'repository-import';

/** The registry operations an import needs (the Registry class satisfies it). */
export interface ImportTarget {
  getModel(name: string): Promise<ModelRecord>;
  createModel(input: CreateModelInput, actor: string): Promise<ModelRecord>;
  updateModel(name: string, patch: UpdateModelInput, actor: string): Promise<ModelRecord>;
  listVersions(name: string, opts?: { includeArchived?: boolean }): Promise<VersionRecord[]>;
  pushVersion(name: string, artifact: Buffer | Readable, input: PushVersionInput, actor: string): Promise<VersionRecord>;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const notFound = (e: unknown): boolean => isSwitchyardError(e) && e.status === 404;
const conflict = (e: unknown): boolean => isSwitchyardError(e) && e.status === 409;

/**
 * Import `dir` into the registry. Returns the models whose config file is invalid, with the reason (their
 * versions are registered but served as UNAVAILABLE naming the bad key).
 */
export async function importRepository(registry: ImportTarget, dir: string, log: Logger): Promise<Map<string, string>> {
  const configErrors = new Map<string, string>();
  for (const rm of await scanRepository(dir)) {
    if (rm.configError) configErrors.set(rm.name, rm.configError);
    const config: Record<string, unknown> = rm.configError ? {} : { version_policy: { latest: { num_versions: 1 } }, ...rm.config };
    const existing: ModelRecord | null = await registry.getModel(rm.name).catch((e: unknown) => (notFound(e) ? null : Promise.reject(e)));
    if (!existing) {
      await registry
        .createModel({ name: rm.name, description: `imported from ${dir}`, loadPolicy: 'preload', config }, ACTOR)
        .catch((e: unknown) => (conflict(e) ? registry.getModel(rm.name) : Promise.reject(e)));
    } else if (JSON.stringify(existing.config) !== JSON.stringify(config)) {
      await registry.updateModel(rm.name, { config }, ACTOR);
    }
    const have = new Map((await registry.listVersions(rm.name, { includeArchived: true })).map((v) => [v.version, v.artifact.sha256]));
    for (const v of rm.versions) {
      const path = rm.artifact(v);
      const known = have.get(v);
      if (known !== undefined) {
        if (known !== (await sha256File(path)))
          log.warn({ model: rm.name, version: v, path }, 'repository file differs from the registered version of the same number; the registered one is kept');
        continue;
      }
      try {
        await registry.pushVersion(rm.name, createReadStream(path), { version: v, description: `imported from ${path}` }, ACTOR);
      } catch (e) {
        if (conflict(e)) continue; // another replica imported it first
        log.error({ model: rm.name, version: v, reason: (e as Error).message }, 'repository version not imported');
      }
    }
  }
  return configErrors;
}
