/**
 * @module
 * Reads a model repository directory: `DIR/<model>/<version>/model.onnx` with positive integer versions and an
 * optional `DIR/<model>/config.json` (or `config.yaml` / `config.yml`).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readModelConfig, type ModelConfigFile, type VersionPolicy } from '../config/index.js';
import { err } from '../errors.js';
import { MODEL_NAME } from '../registry/index.js';

const CONFIG_FILES = ['config.json', 'config.yaml', 'config.yml'];

export interface RepositoryModel {
  readonly name: string;
  /** Every version present on disk, ascending. */
  readonly versions: readonly number[];
  readonly config: ModelConfigFile;
  readonly configError: string | null;
  artifact(version: number): string;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then((s) => s.isFile(), () => false);
}

export async function scanRepository(dir: string): Promise<RepositoryModel[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw err('SY_ERR_CONFIG_INVALID', `model repository ${dir} cannot be read: ${(e as Error).message}`);
  }
  const models: RepositoryModel[] = [];
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (!e.isDirectory() || !MODEL_NAME.test(e.name)) continue;
    const root = join(dir, e.name);
    const versions: number[] = [];
    for (const v of await readdir(root, { withFileTypes: true })) {
      if (v.isDirectory() && /^[1-9][0-9]{0,15}$/.test(v.name) && (await exists(join(root, v.name, 'model.onnx')))) {
        versions.push(Number(v.name));
      }
    }
    let config: ModelConfigFile = {};
    let configError: string | null = null;
    for (const f of CONFIG_FILES) {
      if (!(await exists(join(root, f)))) continue;
      try {
        config = await readModelConfig(join(root, f));
      } catch (ce) {
        configError = (ce as Error).message;
      }
      break;
    }
    models.push({
      name: e.name,
      versions: versions.sort((a, b) => a - b),
      config,
      configError,
      artifact: (v) => join(root, String(v), 'model.onnx'),
    });
  }
  return models;
}

/** The versions a policy selects from those on disk. */
export function selectVersions(available: readonly number[], policy: VersionPolicy): number[] {
  if ('all' in policy) return [...available];
  if ('specific' in policy) return available.filter((v) => policy.specific.versions.includes(v));
  return available.slice(-policy.latest.num_versions);
}
