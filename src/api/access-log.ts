/**
 * @module
 * The HTTP access log: one structured line per answered request — request id, method, route, status,
 * latency, tenant, model, actor — at `debug` for every request, and at `info` for a sampled share
 * (`--access-log-sample-rate`, default 0). Installed only when one of the two can log: otherwise requests pay
 * nothing for it (no hook).
 *
 * @example
 * installAccessLog(app, { logger, sampleRate: 0.01 });
 * // {"level":30,"msg":"request","requestId":"…","method":"POST","route":"/v2/models/:model/infer","status":200,"latencyMs":1.9,"tenant":"acme","model":"acme.m","actor":"acme/k_…"}
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';

export interface AccessLogOptions {
  readonly logger: Logger;
  /** Share of requests logged at info, 0..1. */
  readonly sampleRate: number;
  /** Random source in [0, 1) (tests). Default Math.random. */
  readonly random?: () => number;
}

/** What one access-log line says about a request. */
export interface AccessEntry {
  requestId: string;
  method: string;
  route: string;
  status: number;
  latencyMs: number;
  tenant: string | null;
  model: string | null;
  actor: string | null;
}

function modelOf(req: FastifyRequest): string | null {
  const params = req.params as Record<string, string> | undefined;
  const fromPath = params?.['model'] ?? params?.['name'];
  if (fromPath !== undefined) return fromPath;
  const body = req.body as { model?: unknown } | null | undefined;
  return typeof body?.model === 'string' ? body.model : null;
}

/** The access-log entry of an answered request. */
export function accessEntry(req: FastifyRequest, reply: FastifyReply): AccessEntry {
  const p = req.principal;
  return {
    requestId: req.id,
    method: req.method,
    route: req.routeOptions.url ?? req.url.split('?')[0]!,
    status: reply.statusCode,
    latencyMs: Math.round(reply.elapsedTime * 1000) / 1000,
    tenant: p?.kind === 'tenant' ? p.tenant.name : null,
    model: modelOf(req),
    actor: p?.actor ?? null,
  };
}

export function installAccessLog(app: FastifyInstance, opts: AccessLogOptions): void {
  const { logger, sampleRate } = opts;
  const random = opts.random ?? Math.random;
  const debug = logger.isLevelEnabled('debug');
  const info = sampleRate > 0 && logger.isLevelEnabled('info');
  if (!debug && !info) return;
  app.addHook('onResponse', (req, reply, done) => {
    if (info && random() < sampleRate) logger.info(accessEntry(req, reply), 'request');
    else if (debug) logger.debug(accessEntry(req, reply), 'request');
    done();
  });
}
