/**
 * @module
 * The web console's static files at `/ui/` (built from web/ into dist/web at install time, `npm run build:web`).
 * The files hold no data: the console signs in with an API key and calls the admin API with it, so these
 * routes are public. Nothing is fetched from elsewhere at run time (a Content-Security-Policy says so too).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply } from 'fastify';

export interface UiOptions {
  /** The built console (index.html and assets/). */
  readonly root: string;
}

/** Only this server's own files and API; inline styles are the chart library's (uPlot sizes its canvases with them). */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

function secure(reply: FastifyReply, path: string): void {
  reply.header('content-security-policy', CSP);
  reply.header('x-content-type-options', 'nosniff');
  reply.header('referrer-policy', 'no-referrer');
  // Vite names assets by content hash: cache them for good; index.html is always revalidated.
  reply.header('cache-control', path.includes('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache');
}

export async function uiRoutes(app: FastifyInstance, opts: UiOptions): Promise<void> {
  if (!existsSync(join(opts.root, 'index.html'))) {
    // Built without the console (e.g. `tsc` only): say so once; /ui answers 404 like any unknown path.
    app.log.warn(`the web console is not built (no ${join(opts.root, 'index.html')}): run "npm run build:web" to serve it at /ui, or start with --no-ui`);
    return;
  }
  app.get('/ui', { schema: { hide: true } }, (_req, reply) => reply.redirect('/ui/', 301));
  await app.register(fastifyStatic, {
    root: opts.root,
    prefix: '/ui/',
    index: 'index.html',
    wildcard: true,
    decorateReply: false,
    setHeaders: (reply, path) => secure(reply, path),
    cacheControl: false,
    schemaHide: true,
  });
}
