/**
 * @module
 * The inference core's {@link Caller} for a gRPC call: tenant, fair-queueing flow and key id from the
 * authenticated principal, the request id (the request's `id`, else a generated one), and header lookup in the
 * call's metadata (a routing policy keyed on a header reads the metadata entry of that name).
 */
import { flowOf, tenantOf, type Principal } from '../../gateway/index.js';
import type { Caller } from '../../inference/index.js';
import type { Flow } from '../../serving/index.js';
import type { MetadataReader } from './front.js';

export class GrpcCaller implements Caller {
  readonly tenant: string;
  readonly flow: Flow | undefined;
  readonly keyId: string | null;
  readonly #metadata: MetadataReader;

  constructor(
    p: Principal,
    metadata: MetadataReader,
    readonly requestId: string,
  ) {
    this.tenant = tenantOf(p);
    this.flow = flowOf(p);
    this.keyId = p.key?.id ?? null;
    this.#metadata = metadata;
  }

  header(name: string): string | undefined {
    const v = this.#metadata.get(name)[0];
    return v === undefined ? undefined : typeof v === 'string' ? v : v.toString('utf8');
  }
}
