/**
 * @module
 * The inference core's {@link Caller} for an HTTP request: tenant, fair-queueing flow and key id from the
 * principal the gateway hook attached, the request id, and header lookup for routing keys.
 */
import type { FastifyRequest } from 'fastify';
import { flowOf, tenantOf } from '../gateway/index.js';
import type { Caller } from '../inference/index.js';
import type { Flow } from '../serving/index.js';

export class RequestCaller implements Caller {
  readonly tenant: string;
  readonly flow: Flow | undefined;
  readonly keyId: string | null;
  readonly requestId: string;
  readonly #req: FastifyRequest;

  constructor(req: FastifyRequest) {
    const p = req.principal;
    this.#req = req;
    this.tenant = tenantOf(p);
    this.flow = flowOf(p);
    this.keyId = p?.key?.id ?? null;
    this.requestId = req.id;
  }

  header(name: string): string | undefined {
    const h = this.#req.headers[name];
    return Array.isArray(h) ? h[0] : h;
  }
}
