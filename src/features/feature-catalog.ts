/**
 * @module
 * The feature catalog: an in-memory, consistent snapshot of every current definition (what the data plane reads),
 * and the reference checks a definition must pass against it (known entities and refs, no clashing names, one
 * service per model binding).
 */
import type { AggregationDef, EntityDef, FeatureRef, FeatureServiceDef, ValueType, ViewDef } from './types.js';
import { bad, type JoinKey } from './definition-schemas.js';

// ---- catalog ----

/** An in-memory, consistent snapshot of every current definition: what the data plane reads (never the database per request). */
export interface FeatureCatalog {
  readonly entities: ReadonlyMap<string, EntityDef>;
  readonly views: ReadonlyMap<string, ViewDef>;
  readonly services: ReadonlyMap<string, FeatureServiceDef>;
  /** The join keys of a view (its entities' join keys, in order); 400 for an unknown view. */
  joinKeys(view: string): readonly JoinKey[];
  /** Resolve a feature ref to its view and feature (or aggregation) definition; 400 naming the ref when unknown. */
  resolve(ref: FeatureRef): { view: ViewDef; feature: string; type: ValueType };
  /** The service bound to a model version: version-specific binding first, else a model-wide one; undefined when none. */
  serviceFor(model: string, version: number): FeatureServiceDef | undefined;
}

/** The value type of a windowed view's aggregation: count is int64, the others float64. */
export const aggregationType = (a: AggregationDef): ValueType => (a.fn === 'count' ? 'int64' : 'float64');

export class Catalog implements FeatureCatalog {
  readonly entities: ReadonlyMap<string, EntityDef>;
  readonly views: ReadonlyMap<string, ViewDef>;
  readonly services: ReadonlyMap<string, FeatureServiceDef>;
  readonly #keys = new Map<string, readonly JoinKey[] | string>();
  readonly #bindings = new Map<string, { all?: FeatureServiceDef; byVersion: Map<number, FeatureServiceDef> }>();

  constructor(entities: readonly EntityDef[], views: readonly ViewDef[], services: readonly FeatureServiceDef[]) {
    this.entities = new Map(entities.map((e) => [e.name, e]));
    this.views = new Map(views.map((v) => [v.name, v]));
    this.services = new Map(services.map((s) => [s.name, s]));
    for (const v of views) {
      const keys: JoinKey[] = [];
      let missing: string | null = null;
      for (const e of v.entities) {
        const ent = this.entities.get(e);
        if (ent === undefined) missing ??= `feature view "${v.name}" names entity "${e}", which is not defined`;
        else keys.push(...ent.joinKeys);
      }
      this.#keys.set(v.name, missing ?? keys);
    }
    for (const s of [...services].sort((a, b) => a.name.localeCompare(b.name))) {
      if (s.model === undefined) continue;
      let b = this.#bindings.get(s.model);
      if (!b) this.#bindings.set(s.model, (b = { byVersion: new Map() }));
      if (s.version === undefined) b.all ??= s;
      else if (!b.byVersion.has(s.version)) b.byVersion.set(s.version, s);
    }
  }

  joinKeys(view: string): readonly JoinKey[] {
    const k = this.#keys.get(view);
    if (k === undefined) bad(`unknown feature view "${view}"`);
    if (typeof k === 'string') bad(k);
    return k;
  }

  resolve(ref: FeatureRef): { view: ViewDef; feature: string; type: ValueType } {
    const i = typeof ref === 'string' ? ref.indexOf(':') : -1;
    if (i <= 0 || i === ref.length - 1) bad(`invalid feature reference ${JSON.stringify(ref)}: expected "view:feature"`);
    const viewName = ref.slice(0, i);
    const feature = ref.slice(i + 1);
    const view = this.views.get(viewName);
    if (view === undefined) bad(`unknown feature "${ref}": no feature view "${viewName}"`);
    if (view.kind === 'view') {
      const f = view.features.find((x) => x.name === feature);
      if (f === undefined) bad(`unknown feature "${ref}": feature view "${viewName}" has no feature "${feature}"`);
      return { view, feature, type: f.type };
    }
    const a = view.aggregations.find((x) => x.name === feature);
    if (a === undefined) bad(`unknown feature "${ref}": windowed view "${viewName}" has no aggregation "${feature}"`);
    return { view, feature, type: aggregationType(a) };
  }

  serviceFor(model: string, version: number): FeatureServiceDef | undefined {
    const b = this.#bindings.get(model);
    return b === undefined ? undefined : (b.byVersion.get(version) ?? b.all);
  }
}

/** A catalog of these definitions (no reference checks: unknown entities make `joinKeys` of their views fail). */
export function buildCatalog(defs: { entities?: readonly EntityDef[]; views?: readonly ViewDef[]; services?: readonly FeatureServiceDef[] }): FeatureCatalog {
  return new Catalog(defs.entities ?? [], defs.views ?? [], defs.services ?? []);
}

// ---- reference checks ----

/** Why a view does not fit the catalog (unknown entity, clashing join keys or feature names), or null. */
export function viewProblem(v: ViewDef, c: FeatureCatalog): string | null {
  const keys: string[] = [];
  for (const e of v.entities) {
    const ent = c.entities.get(e);
    if (ent === undefined) return `unknown entity "${e}"`;
    for (const k of ent.joinKeys) {
      if (keys.includes(k.name)) return `join key "${k.name}" comes from two of its entities (${v.entities.join(', ')})`;
      keys.push(k.name);
    }
  }
  const names =
    v.kind === 'view'
      ? v.features.map((f) => f.name)
      : [...v.aggregations.map((a) => a.name), ...v.aggregations.flatMap((a) => (a.field === undefined ? [] : [a.field]))];
  const clash = names.find((n) => keys.includes(n));
  if (clash !== undefined) return `"${clash}" is both a join key and a ${v.kind === 'view' ? 'feature' : 'aggregation or event field'}`;
  return null;
}

function defaultFits(value: string | number | boolean, type: ValueType): boolean {
  switch (type) {
    case 'int64':
      return typeof value === 'number' && Number.isSafeInteger(value);
    case 'float32':
    case 'float64':
      return typeof value === 'number';
    case 'string':
      return typeof value === 'string';
    case 'bool':
      return typeof value === 'boolean';
  }
}

/** Why a service does not fit the catalog (unknown ref, default of the wrong type, mixed input types), or null. */
export function serviceProblem(s: FeatureServiceDef, c: FeatureCatalog): string | null {
  const inputs = new Map<string, { ref: string; text: boolean }>();
  for (const f of s.features) {
    let type: ValueType;
    try {
      type = c.resolve(f.ref).type;
    } catch (e) {
      return (e as Error).message;
    }
    if (f.default !== undefined && !defaultFits(f.default, type)) return `the default of "${f.ref}" (${JSON.stringify(f.default)}) is not a ${type}`;
    if (f.input !== undefined) {
      const text = type === 'string';
      const other = inputs.get(f.input);
      if (other !== undefined && other.text !== text) return `input "${f.input}" mixes a string feature with a non-string one ("${other.ref}", "${f.ref}")`;
      inputs.set(f.input, other ?? { ref: f.ref, text });
    }
  }
  return null;
}

/** The service already bound to the same model and version (or model-wide), if another one is. */
export function bindingClash(s: FeatureServiceDef, c: FeatureCatalog): FeatureServiceDef | undefined {
  if (s.model === undefined) return undefined;
  for (const o of c.services.values()) if (o.name !== s.name && o.model === s.model && o.version === s.version) return o;
  return undefined;
}
