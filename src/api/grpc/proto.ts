/**
 * @module
 * Loads Switchyard's gRPC definitions (`proto/grpc_service.proto`: `inference.GRPCInferenceService`, the
 * Open Inference Protocol; `proto/health.proto`: `grpc.health.v1.Health`) with @grpc/proto-loader. The .proto
 * files live at the package root, outside the TypeScript build, and are found from this module's location,
 * so the same code runs from `src/` (tsx) and from `dist/src/` (tsc).
 *
 * Loader options: field names as in the .proto (`raw_input_contents`), 64-bit integers as decimal strings
 * (exact: `int64_contents` may hold any INT64), enums by name, `bytes` as Buffers (views of the received
 * message: raw tensor data is not copied), defaults filled in, oneofs named.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';

export const LOADER_OPTIONS: Options = Object.freeze({ keepCase: true, longs: String, enums: String, defaults: true, arrays: true, oneofs: true });

/** The folder holding the .proto files: `proto/` at the package root. */
export function protoDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'grpc_service.proto'))) return candidate;
    const up = dirname(dir);
    if (up === dir) throw new Error('proto/grpc_service.proto not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export interface Protos {
  readonly inference: ServiceDefinition;
  readonly health: ServiceDefinition;
  /** Client constructors (tests, benchmarks, tools). */
  readonly InferenceClient: ServiceClientConstructor;
  readonly HealthClient: ServiceClientConstructor;
}

let loaded: Protos | null = null;

/** The service definitions, loaded once per process. */
export function loadProtos(): Protos {
  if (loaded !== null) return loaded;
  const dir = protoDir();
  const def = loadSync([join(dir, 'grpc_service.proto'), join(dir, 'health.proto')], { ...LOADER_OPTIONS, includeDirs: [dir] });
  const root = loadPackageDefinition(def) as GrpcObject & { inference: GrpcObject; grpc: { health: { v1: GrpcObject } } };
  const InferenceClient = root.inference['GRPCInferenceService'] as ServiceClientConstructor;
  const HealthClient = root.grpc.health.v1['Health'] as ServiceClientConstructor;
  loaded = { inference: InferenceClient.service, health: HealthClient.service, InferenceClient, HealthClient };
  return loaded;
}
