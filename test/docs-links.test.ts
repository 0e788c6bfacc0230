/**
 * The docs' links hold: every relative link in README.md, docs/*.md, examples/README.md and bench/README.md
 * names a file of the repository, and a `#fragment` into a Markdown file names one of its headings (GitHub's
 * anchors: lower case, punctuation dropped, spaces as hyphens, a repeated heading suffixed -1, -2, …). Moving a
 * section between pages, or renaming a heading, cannot leave a dead link behind.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Markdown outside fenced code blocks. */
function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```$/gm, '');
}

/** GitHub's anchor for a heading's text. */
function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1') // a link's text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}_\- ]/gu, '')
    .replace(/ /g, '-');
}

const anchorCache = new Map<string, Set<string>>();
function anchors(file: string): Set<string> {
  let set = anchorCache.get(file);
  if (set === undefined) {
    set = new Set();
    const seen = new Map<string, number>();
    for (const m of prose(readFileSync(file, 'utf8')).matchAll(/^#{1,6} (.+)$/gm)) {
      const base = slug(m[1]!);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      set.add(n === 0 ? base : `${base}-${n}`);
    }
    anchorCache.set(file, set);
  }
  return set;
}

const pages = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
  'examples/README.md',
  'bench/README.md',
].filter((p) => existsSync(join(ROOT, p)));

describe('links in the docs', () => {
  it('slugs headings as GitHub does', () => {
    assert.equal(slug('Open Inference Protocol (V2) gRPC'), 'open-inference-protocol-v2-grpc');
    assert.equal(slug('Model configuration (`config.json` / `config.yaml`)'), 'model-configuration-configjson--configyaml');
    assert.equal(slug('Embeddings (`POST /v1/embeddings`)'), 'embeddings-post-v1embeddings');
  });

  for (const page of pages) {
    it(`${page}: every relative link resolves`, () => {
      const file = join(ROOT, page);
      const dead: string[] = [];
      for (const m of prose(readFileSync(file, 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
        const hash = target.indexOf('#');
        const path = hash < 0 ? target : target.slice(0, hash);
        const fragment = hash < 0 ? '' : target.slice(hash + 1);
        const full = path === '' ? file : normalize(join(dirname(file), decodeURIComponent(path)));
        if (relative(ROOT, full).startsWith('..') || !existsSync(full)) {
          dead.push(`${target} (no such file)`);
          continue;
        }
        if (fragment !== '' && full.endsWith('.md') && !anchors(full).has(fragment)) dead.push(`${target} (no such heading)`);
      }
      assert.deepEqual(dead, [], `${page} links to`);
    });
  }
});
