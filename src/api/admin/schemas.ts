/**
 * @module
 * JSON schemas of the registry admin API (`/api/v1`): request validation and response serialization for
 * Fastify, and the source of the OpenAPI document @fastify/swagger generates. Schemas are inlined (no `$id`)
 * so they work inside the encapsulated admin plugin whatever context swagger is registered in. Field names
 * are the record fields of src/registry/types.ts (camelCase).
 */

const str = (description?: string): Record<string, unknown> => ({ type: 'string', ...(description ? { description } : {}) });
const time = (description: string): Record<string, unknown> => ({ type: 'string', format: 'date-time', description });
const nullable = (type: string, description: string): Record<string, unknown> => ({ type: [type, 'null'], description });

export const stringMap = { type: 'object', additionalProperties: { type: 'string' } } as const;
export const numberMap = { type: 'object', additionalProperties: { type: 'number' } } as const;

export const errorSchema = {
  type: 'object',
  description: 'An error; `error` says what is wrong (and names the field for bad input), `code` is its stable code (see docs/errors.md).',
  required: ['error', 'code'],
  properties: {
    error: { type: 'string', description: 'What is wrong, for people: match on `code`, not on this text.' },
    code: { type: 'string', pattern: '^SY_ERR_[A-Z_]+$', description: 'Stable error code (SY_ERR_...), listed in docs/errors.md.' },
  },
} as const;

const loadPolicy = { type: 'string', enum: ['preload', 'lazy'], description: 'Load versions at start/registration (preload) or on first request (lazy).' };

export const modelSchema = {
  type: 'object',
  description: 'A registered model.',
  required: [
    'name',
    'description',
    'owner',
    'tags',
    'loadPolicy',
    'pinned',
    'config',
    'latestVersion',
    'aliases',
    'routing',
    'routingRevision',
    'createdAt',
    'updatedAt',
  ],
  properties: {
    name: str('Model name (unique).'),
    description: str(),
    owner: str(),
    tags: { ...stringMap, description: 'Model tags (key → value).' },
    loadPolicy,
    pinned: { type: 'boolean', description: 'Pinned models are never evicted by the residency budget.' },
    config: { type: 'object', additionalProperties: true, description: 'Serving configuration (the keys of a repository config.json).' },
    latestVersion: { type: 'integer', description: 'Highest version number ever allocated (0 when none).' },
    aliases: { type: 'object', additionalProperties: { type: 'integer' }, description: 'alias → version number.' },
    routing: {
      anyOf: [{ type: 'null' }, { type: 'object', additionalProperties: true }],
      description: 'Traffic policy for requests that name no version (see /api/v1/models/{name}/routing); null = the default route.',
    },
    routingRevision: { type: 'integer', description: 'Bumped by every routing policy change (0 = never set).' },
    createdAt: time('Creation time (ISO-8601 UTC).'),
    updatedAt: time('Last update time (ISO-8601 UTC).'),
  },
} as const;

const tensorSpec = {
  type: 'object',
  required: ['name', 'datatype', 'shape'],
  properties: {
    name: str(),
    datatype: str('V2 datatype, e.g. FP32.'),
    shape: { type: 'array', items: { type: 'integer' }, description: '-1 for a dynamic dimension.' },
  },
} as const;

const lineage = {
  type: 'object',
  description: 'Where the version came from (free-form references).',
  properties: { sourceRun: str('Training run id.'), dataset: str('Dataset reference.'), codeRef: str('Code reference, e.g. a commit.') },
  additionalProperties: false,
} as const;

export const versionSchema = {
  type: 'object',
  description: 'A registered model version.',
  required: [
    'model',
    'version',
    'description',
    'artifact',
    'signature',
    'metrics',
    'params',
    'tags',
    'lineage',
    'createdBy',
    'createdAt',
    'status',
    'statusReason',
    'archivedAt',
  ],
  properties: {
    model: str('Model name.'),
    version: { type: 'integer', description: 'Version number (never reused).' },
    description: str(),
    artifact: {
      type: 'object',
      required: ['uri', 'sha256', 'size'],
      properties: {
        uri: str('Store location of the artifact.'),
        sha256: str('SHA-256 of the artifact bytes (hex).'),
        size: { type: 'integer', description: 'Bytes.' },
      },
    },
    signature: {
      type: ['object', 'null'],
      description: 'Inputs and outputs read from the artifact.',
      properties: { inputs: { type: 'array', items: tensorSpec }, outputs: { type: 'array', items: tensorSpec } },
    },
    metrics: { ...numberMap, description: 'Evaluation metrics (name → number).' },
    params: { ...stringMap, description: 'Training parameters (name → value).' },
    tags: { ...stringMap, description: 'Version tags (key → value).' },
    lineage,
    createdBy: str('Actor who pushed the version.'),
    createdAt: time('Push time (ISO-8601 UTC).'),
    status: { type: 'string', enum: ['pending', 'ready', 'failed'] },
    statusReason: nullable('string', 'Why the version failed, else null.'),
    archivedAt: { type: ['string', 'null'], format: 'date-time', description: 'When the version was archived, else null.' },
  },
} as const;

export const uploadedVersionSchema = {
  ...versionSchema,
  description: 'The registered version; `alias` is present when the upload set one.',
  properties: { ...versionSchema.properties, alias: str('The alias that now points at this version.') },
} as const;

export const eventSchema = {
  type: 'object',
  description: 'One entry of the append-only registry event log.',
  required: ['id', 'model', 'type', 'version', 'alias', 'fromVersion', 'toVersion', 'key', 'value', 'actor', 'at'],
  properties: {
    id: { type: 'integer' },
    model: str(),
    type: {
      type: 'string',
      enum: [
        'model_created',
        'model_updated',
        'model_deleted',
        'version_created',
        'version_status',
        'version_archived',
        'alias_moved',
        'alias_removed',
        'tag_set',
        'tag_removed',
        'routing_set',
        'routing_removed',
        'experiment_started',
        'experiment_stopped',
      ],
    },
    version: nullable('integer', 'The version concerned, else null.'),
    alias: nullable('string', 'alias_* events: the alias name.'),
    fromVersion: nullable('integer', 'alias_* events: the version the alias pointed at before.'),
    toVersion: nullable('integer', 'alias_moved: the version it points at now.'),
    key: nullable('string', 'tag_* events: the tag key; routing_*: the new policy revision; experiment_*: the experiment id.'),
    value: nullable('string', 'tag_set: the value; version_status: the new status; routing_*: JSON {policy, reason}; experiment_stopped: why.'),
    actor: str(),
    at: time('ISO-8601 UTC with milliseconds.'),
  },
} as const;

export const modelDetailSchema = {
  ...modelSchema,
  description: 'A registered model with all its versions (archived included) and, when the server serves it, live serving state.',
  properties: {
    ...modelSchema.properties,
    versions: { type: 'array', items: versionSchema },
    serving: {
      type: 'array',
      description: 'Live serving state per version (state, resident bytes, …).',
      items: { type: 'object', additionalProperties: true },
    },
  },
} as const;

// ---- request parts ----

export const actorHeaders = {
  type: 'object',
  properties: { 'x-switchyard-actor': { type: 'string', description: 'Who makes the change (recorded in the event log); default "anonymous".' } },
} as const;

export const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: str('Model name.') },
} as const;

export const versionParams = {
  type: 'object',
  required: ['name', 'version'],
  properties: { name: str('Model name.'), version: str('Version number or alias.') },
} as const;

export const aliasParams = {
  type: 'object',
  required: ['name', 'alias'],
  properties: { name: str('Model name.'), alias: str('Alias name.') },
} as const;

export const modelTagParams = {
  type: 'object',
  required: ['name', 'key'],
  properties: { name: str('Model name.'), key: str('Tag key.') },
} as const;

export const versionTagParams = {
  type: 'object',
  required: ['name', 'version', 'key'],
  properties: { name: str('Model name.'), version: str('Version number or alias.'), key: str('Tag key.') },
} as const;

const modelFields = {
  description: str('What the model does.'),
  owner: str('Owning team or person.'),
  tags: { ...stringMap, description: 'Model tags (key → value).' },
  loadPolicy,
  pinned: { type: 'boolean', description: 'Never evict from memory.' },
  config: { type: 'object', additionalProperties: true, description: 'Serving configuration (keys of a repository config.json).' },
} as const;

export const createModelBody = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: { name: str('Model name.'), ...modelFields },
} as const;

export const updateModelBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: modelFields,
} as const;

export const tagBody = {
  type: 'object',
  required: ['value'],
  additionalProperties: false,
  properties: { value: str('Tag value.') },
} as const;

export const aliasBody = {
  type: 'object',
  required: ['version'],
  additionalProperties: false,
  properties: { version: { type: 'integer', minimum: 1, description: 'Version number the alias should point at.' } },
} as const;

const eventFilters = {
  since: str('Only events at or after this ISO-8601 time.'),
  until: str('Only events at or before this ISO-8601 time.'),
  limit: { type: 'integer', minimum: 1, maximum: 10000, description: 'At most this many events.' },
} as const;

export const modelEventsQuery = { type: 'object', additionalProperties: false, properties: eventFilters } as const;
export const eventsQuery = { type: 'object', additionalProperties: false, properties: { model: str('Only events of this model.'), ...eventFilters } } as const;

export const listVersionsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { include_archived: { type: 'boolean', default: false, description: 'Include archived versions.' } },
} as const;

export const aliasAtQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { at: str('ISO-8601 time; where the alias pointed at that time (default: now).') },
} as const;

export const uploadQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    description: str('Version description.'),
    alias: str('Point this alias at the new version after the push.'),
    tag: { type: 'array', items: { type: 'string' }, description: 'Version tag as key=value (repeatable).' },
    metric: { type: 'array', items: { type: 'string' }, description: 'Metric as key=number (repeatable).' },
    param: { type: 'array', items: { type: 'string' }, description: 'Training parameter as key=value (repeatable).' },
    source_run: str('Lineage: training run id.'),
    dataset: str('Lineage: dataset reference.'),
    code_ref: str('Lineage: code reference.'),
    version: { type: 'integer', minimum: 1, description: 'Explicit version number (must be unused); default: the next one.' },
  },
} as const;

/** The upload body, documented for OpenAPI only (the handler reads the stream itself; see upload.ts). */
export const uploadBodyDoc = {
  content: {
    'application/octet-stream': {
      schema: { type: 'string', format: 'binary', description: 'The ONNX model bytes; metadata in the query string.' },
    },
    'multipart/form-data': {
      schema: {
        type: 'object',
        required: ['file'],
        properties: {
          metadata: {
            type: 'string',
            description:
              'JSON `{description, alias, tags, metrics, params, lineage: {sourceRun, dataset, codeRef}, version}`; send it before `file` so the file streams straight to the store.',
          },
          file: { type: 'string', format: 'binary', description: 'The ONNX model file.' },
        },
      },
    },
  },
} as const;

/** Common error responses. */
export const errors = (...codes: number[]): Record<number, typeof errorSchema> => Object.fromEntries([...codes, 500].map((c) => [c, errorSchema]));

export const noContent = { type: 'null', description: 'No content.' } as const;
