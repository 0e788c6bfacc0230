/**
 * `switchyard migrate` (the deployment's migration step) on a fresh SQLite store: --check lists what is pending
 * and exits 2, a run applies it, a second check finds nothing.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ok, runCli } from './cli-helpers.js';

describe('switchyard migrate', () => {
  it('reports pending migrations with --check (exit 2), applies them, then reports none', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-migrate-'));
    try {
      const flags = ['--data-dir', dir];
      const pending = await runCli(['migrate', ...flags, '--check', '--json']);
      assert.equal(pending.code, 2, pending.stderr);
      const before = JSON.parse(pending.stdout) as { known: number; pending: string[]; applied: string[] };
      assert.ok(before.known > 0);
      assert.equal(before.pending.length, before.known, 'a new store: everything pending');
      const applied = JSON.parse(ok(await runCli(['migrate', ...flags, '--json']))) as { pending: string[]; applied: string[] };
      assert.deepEqual(applied.applied, before.pending);
      assert.deepEqual(applied.pending, []);
      const after = JSON.parse(ok(await runCli(['migrate', ...flags, '--check', '--json']))) as { pending: string[]; applied: string[] };
      assert.deepEqual(after, { database: `sqlite:${join(dir, 'switchyard.db')}`, known: before.known, pending: [], applied: [] });
      assert.match(ok(await runCli(['migrate', ...flags])), /up to date/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
