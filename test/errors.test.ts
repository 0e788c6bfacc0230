import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERRORS } from '../src/errors.js';

describe('error catalog', () => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  it('docs/errors.md documents every code with its status', () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      assert.match(doc, new RegExp(`\\| \`${code}\` \\| ${spec.status} \\|`), `${code} (${spec.status}) missing from docs/errors.md`);
    }
  });
  it('docs/errors.md lists no code the catalog lacks', () => {
    for (const m of doc.matchAll(/`(SY_ERR_[A-Z_]+)`/g)) assert.ok(m[1]! in ERRORS, `${m[1]} is documented but not in src/errors.ts`);
  });
});
