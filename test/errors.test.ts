import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERRORS, type ErrorSpec } from '../src/errors.js';

describe('error catalog', () => {
  const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
  /** The table's rows: code → [status, retry, OpenAI type, OpenAI code]. */
  const rows = new Map<string, readonly string[]>();
  for (const m of doc.matchAll(/^\| `(SY_ERR_[A-Z_]+)` \| ([^|]*) \| ([^|]*) \| ([^|]*) \| ([^|]*) \|/gm)) {
    assert.ok(!rows.has(m[1]!), `${m[1]} is documented twice`);
    rows.set(m[1]!, [m[2]!, m[3]!, m[4]!, m[5]!]);
  }

  it('docs/errors.md documents every code with its status, retry, OpenAI type and OpenAI code', () => {
    for (const [code, spec] of Object.entries(ERRORS) as Array<[string, ErrorSpec]>) {
      const row = rows.get(code);
      assert.ok(row, `${code} missing from the docs/errors.md table`);
      assert.deepEqual(
        row,
        [String(spec.status), spec.retryable ? 'yes' : 'no', `\`${spec.type}\``, spec.openaiCode === null ? '—' : `\`${spec.openaiCode}\``],
        `${code}: docs/errors.md says | ${row.join(' | ')} |`,
      );
    }
  });
  it('docs/errors.md lists no code the catalog lacks', () => {
    for (const m of doc.matchAll(/`(SY_ERR_[A-Z_]+)`/g)) assert.ok(m[1]! in ERRORS, `${m[1]} is documented but not in src/errors.ts`);
    assert.equal(rows.size, Object.keys(ERRORS).length);
  });
  it('every catalog code is SY_ERR_<WHAT> and every status an HTTP error status', () => {
    for (const [code, spec] of Object.entries(ERRORS) as Array<[string, ErrorSpec]>) {
      assert.match(code, /^SY_ERR_[A-Z]+(_[A-Z]+)*$/);
      assert.ok(spec.status >= 400 && spec.status <= 599, `${code}: ${spec.status}`);
    }
  });
});
