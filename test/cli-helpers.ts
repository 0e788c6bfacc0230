/**
 * Running the real `switchyard` binary (dist/src/cli/main.js) as a child process in CLI tests, and reading
 * what it printed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI with `env` over this process's environment (and `input` on stdin); never rejects. */
export function runCli(args: readonly string[], opts: { env?: Record<string, string>; input?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [cli, ...args], { env: { ...process.env, ...opts.env }, timeout: 60_000 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
    child.stdin?.end(opts.input ?? '');
  });
}

/** Its stdout, after asserting it exited 0. */
export function ok(r: Run): string {
  assert.equal(r.code, 0, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/** Assert it exited 1 with `stderr` matching. */
export function fails(r: Run, stderr: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, stderr);
}

/** The cells of the rows of cli-table3 tables (lines starting with │), header rows (all capitals) left out. */
export function rows(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('│'))
    .map((l) =>
      l
        .split('│')
        .slice(1, -1)
        .map((c) => c.trim()),
    )
    .filter((cells) => !cells.every((c) => /^[A-Z][A-Z .()|-]*$/.test(c)));
}
