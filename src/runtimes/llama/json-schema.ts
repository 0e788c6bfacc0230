/**
 * @module
 * A request's JSON Schema (`response_format.json_schema.schema`, a tool's `parameters`) as the schema
 * node-llama-cpp compiles into a grammar, or a 400 naming what the grammar cannot enforce.
 *
 * Enforced: `type` (one or several), `const`, `enum`, `oneOf` / `anyOf` (any branch), objects (`properties`,
 * `required`, `additionalProperties`, `minProperties`, `maxProperties`), arrays (`items`, `prefixItems`,
 * `minItems`, `maxItems`), strings (`minLength`, `maxLength`, `format` date-time / date / time), `$ref` into
 * `$defs` (or `definitions`). Annotations (`title`, `description`, `default`, `examples`, `$schema`, `$id`,
 * `$comment`, `deprecated`, `readOnly`, `writeOnly`) are dropped: they constrain nothing. Anything else
 * (`pattern`, `minimum`, `allOf`, `not`, `uniqueItems`, other formats, ...) would be silently unenforced, so it
 * is refused.
 */
import { LlmError } from '../generation.js';

const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly']);
const ENFORCED = new Set([
  'type',
  'const',
  'enum',
  'oneOf',
  'anyOf',
  'properties',
  'required',
  'additionalProperties',
  'minProperties',
  'maxProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'format',
  '$ref',
  '$defs',
  'definitions',
]);
const FORMATS = new Set(['date-time', 'date', 'time']);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null', 'object', 'array']);

function refuse(param: string, at: string, what: string): never {
  throw new LlmError(
    'SY_ERR_BAD_REQUEST',
    `Invalid schema for '${param}': ${what} at '${at || '/'}' cannot be enforced by this model's grammar (see docs/llm.md for the supported keywords).`,
    {
      param,
      openaiCode: 'invalid_value',
    },
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The grammar schema for `schema` (a new object; the request's is unchanged). Throws a 400 naming `param` and the
 * JSON pointer of the first keyword that cannot be enforced.
 */
export function grammarSchema(schema: unknown, param: string): Record<string, unknown> {
  return convert(schema, param, '', true) as Record<string, unknown>;
}

function convert(node: unknown, param: string, at: string, root: boolean): unknown {
  if (node === true || (isObject(node) && Object.keys(node).every((k) => ANNOTATIONS.has(k)))) {
    return { type: ['string', 'number', 'boolean', 'null', 'object', 'array'] };
  }
  if (!isObject(node)) refuse(param, at, `${JSON.stringify(node)} (a schema must be an object)`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (ANNOTATIONS.has(k)) continue;
    if (!ENFORCED.has(k)) refuse(param, at, `the keyword '${k}'`);
    const here = `${at}/${k}`;
    switch (k) {
      case 'type':
        for (const t of Array.isArray(v) ? v : [v]) if (typeof t !== 'string' || !TYPES.has(t)) refuse(param, here, `the type ${JSON.stringify(t)}`);
        out['type'] = v;
        break;
      case 'format':
        if (typeof v !== 'string' || !FORMATS.has(v)) refuse(param, here, `the format ${JSON.stringify(v)}`);
        out['format'] = v;
        break;
      case 'oneOf':
      case 'anyOf': {
        if (!Array.isArray(v) || v.length === 0) refuse(param, here, `'${k}' (a non-empty array expected)`);
        if ('oneOf' in out) refuse(param, here, "both 'oneOf' and 'anyOf'");
        // Generating one branch satisfies anyOf; for oneOf the branches must not overlap (the grammar picks one).
        out['oneOf'] = v.map((s, i) => convert(s, param, `${here}/${i}`, false));
        break;
      }
      case 'properties':
      case '$defs':
      case 'definitions': {
        if (!isObject(v)) refuse(param, here, `'${k}' (an object expected)`);
        if (k !== 'properties' && !root) refuse(param, here, `'${k}' below the root`);
        const m: Record<string, unknown> = {};
        for (const [name, s] of Object.entries(v)) m[name] = convert(s, param, `${here}/${name}`, false);
        if (k === 'properties') out['properties'] = m;
        else out['$defs'] = { ...(out['$defs'] as object | undefined), ...m };
        break;
      }
      case 'items':
      case 'additionalProperties':
        out[k] = typeof v === 'boolean' && k === 'additionalProperties' ? v : convert(v, param, here, false);
        break;
      case 'prefixItems':
        if (!Array.isArray(v)) refuse(param, here, "'prefixItems' (an array expected)");
        out[k] = v.map((s, i) => convert(s, param, `${here}/${i}`, false));
        break;
      case '$ref':
        if (typeof v !== 'string' || !/^#\/(\$defs|definitions)\/[^/]+$/.test(v))
          refuse(param, here, `the reference ${JSON.stringify(v)} (only #/$defs/<name>)`);
        out[k] = v.replace('#/definitions/', '#/$defs/');
        break;
      default:
        out[k] = v;
    }
  }
  return out;
}
