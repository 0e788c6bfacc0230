/**
 * @module
 * Reads a model repository directory: `DIR/<model>/<version>/model.onnx` with positive integer versions and an
 * optional `DIR/<model>/config.json` (or `config.yaml` / `config.yml`). Files beside the model that its config
 * refers to are inlined into the config (the registry stores one artifact per version and the config as JSON):
 * `labels_file` (default `labels.txt` when present) becomes `labels`, and each warmup input's
 * `input_data_file` (under `DIR/<model>/warmup/`) becomes `data` (a `.json` file) or base64 `binary_data`.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
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
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
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
    const hasConfig = (await Promise.all(CONFIG_FILES.map((f) => exists(join(root, f))))).some(Boolean);
    if (!hasConfig) config = await inlineFiles(root, {}).catch((ce: unknown) => ((configError = (ce as Error).message), {}));
    for (const f of CONFIG_FILES) {
      if (!(await exists(join(root, f)))) continue;
      try {
        config = await inlineFiles(root, await readModelConfig(join(root, f)));
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

/** A file named by a config key, inside `dir` (no escaping it with `..`). */
async function readInside(dir: string, name: string, key: string): Promise<Buffer> {
  const path = resolve(dir, name);
  const rel = relative(dir, path);
  if (rel === '' || rel.startsWith('..') || rel.startsWith(sep)) throw err('SY_ERR_CONFIG_INVALID', `${key}: "${name}" must name a file inside ${dir}`);
  try {
    return await readFile(path);
  } catch (e) {
    throw err('SY_ERR_CONFIG_INVALID', `${key}: cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Inline the files a model's config names (labels, warmup data) into the config. */
async function inlineFiles(root: string, config: ModelConfigFile): Promise<ModelConfigFile> {
  const out: ModelConfigFile = { ...config };
  const { labels_file: labelsFile, ...rest } = out;
  let labels = config.labels;
  if (labelsFile !== undefined) labels = linesOf(await readInside(root, labelsFile, 'labels_file'));
  else if (labels === undefined && (await exists(join(root, 'labels.txt')))) labels = linesOf(await readFile(join(root, 'labels.txt')));
  const result: ModelConfigFile = { ...rest, ...(labels === undefined ? {} : { labels }) };
  if (config.model_warmup !== undefined) {
    const samples = [];
    for (const [i, s] of config.model_warmup.entries()) {
      const inputs: typeof s.inputs = {};
      for (const [name, input] of Object.entries(s.inputs)) {
        const { input_data_file: file, ...spec } = input;
        if (file === undefined) {
          inputs[name] = input;
          continue;
        }
        const bytes = await readInside(join(root, 'warmup'), file, `model_warmup.${i}.inputs.${name}.input_data_file`);
        if (file.endsWith('.json')) {
          let data: unknown;
          try {
            data = JSON.parse(bytes.toString('utf8'));
          } catch (e) {
            throw err('SY_ERR_CONFIG_INVALID', `model_warmup.${i}.inputs.${name}.input_data_file: ${file} is not valid JSON: ${(e as Error).message}`);
          }
          if (!Array.isArray(data))
            throw err('SY_ERR_CONFIG_INVALID', `model_warmup.${i}.inputs.${name}.input_data_file: ${file} must hold a JSON array of values`);
          inputs[name] = { ...spec, data };
        } else {
          inputs[name] = { ...spec, binary_data: bytes.toString('base64') };
        }
      }
      samples.push({ ...s, inputs });
    }
    result.model_warmup = samples;
  }
  return result;
}

function linesOf(b: Buffer): string[] {
  const lines = b.toString('utf8').split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** The versions a policy selects from those on disk. */
export function selectVersions(available: readonly number[], policy: VersionPolicy): number[] {
  if ('all' in policy) return [...available];
  if ('specific' in policy) return available.filter((v) => policy.specific.versions.includes(v));
  return available.slice(-policy.latest.num_versions);
}
