/**
 * The docs' shell examples run as written: every ```sh block of the README's "Five-minute tour" section, then
 * every ```sh block of docs/walkthrough.md, in order, in one bash shell (so variables and files carry over, as in
 * a reader's terminal), from the repository's root, against a fresh server started as `npm start` starts it
 * (`serve --model-repository examples/models`) with its own data directory and a free port, named by `$SY`
 * (the docs' first block reads `SY=${SY:-http://127.0.0.1:8000}`).
 *
 * What is checked: the shell exits 0 (`set -eo pipefail`; curl fails on an HTTP error status unless the
 * command asks curl to print the status with `-w '%{http_code}'`, where the shown status is the check); and each
 * comment line that shows an output (`# <text>`, the text without "…", a trailing "  (note)" left out) appears in
 * the output of its block. A "…" in a shown output marks what varies (times, ids, random splits): not checked.
 *
 * `npx switchyard` resolves to this package's own bin (dist/src/cli/main.js); the test checks that once with the
 * real npx, then puts an `npx` first on PATH that runs that file directly, to spare npm's start-up on each of the
 * walkthrough's CLI calls.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startReplica, type Replica } from './replica-helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');

interface Block {
  source: string;
  index: number;
  text: string;
}

/** The ```sh blocks of `markdown` (only those of its `section` when given: from that `## ` heading to the next). */
function shBlocks(markdown: string, source: string, section?: string): Block[] {
  let text = markdown;
  if (section !== undefined) {
    const start = markdown.indexOf(`\n## ${section}\n`);
    assert.ok(start >= 0, `${source} has a "## ${section}" section`);
    const next = markdown.indexOf('\n## ', start + 1);
    text = markdown.slice(start, next < 0 ? undefined : next);
  }
  const blocks: Block[] = [];
  for (const m of text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)) blocks.push({ source, index: blocks.length, text: m[1]! });
  return blocks;
}

/** The outputs a block shows: its whole-line comments that hold no "…", without a trailing "  (note)". */
function shownOutputs(block: string): string[] {
  const out: string[] = [];
  for (const line of block.split('\n')) {
    if (!line.startsWith('# ') || line.includes('…')) continue;
    const shown = line
      .slice(2)
      .replace(/\s{2,}\(.*\)$/, '')
      .trim();
    if (shown !== '') out.push(shown);
  }
  return out;
}

function which(cmd: string): boolean {
  try {
    execFileSync('bash', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const missing = ['curl', 'jq'].filter((c) => !which(c));
const skip = missing.length > 0 && process.env['CI'] !== 'true' ? `needs ${missing.join(' and ')} (required in CI)` : false;

describe('the README tour and docs/walkthrough.md run as written', { skip }, () => {
  let server: Replica;
  let scratch: string;
  const blocks = [
    ...shBlocks(readFileSync(join(ROOT, 'README.md'), 'utf8'), 'README.md', 'Five-minute tour'),
    ...shBlocks(readFileSync(join(ROOT, 'docs/walkthrough.md'), 'utf8'), 'docs/walkthrough.md'),
  ];

  before(async () => {
    assert.deepEqual(missing, [], `the walkthrough needs ${missing.join(' and ')}`);
    scratch = mkdtempSync(join(tmpdir(), 'sy-walkthrough-'));
    server = await startReplica(['--model-repository', join(ROOT, 'examples/models'), '--data-dir', join(scratch, 'data')]);
  });

  after(async () => {
    server?.proc.kill('SIGTERM');
    await server?.pool.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('finds the blocks', () => {
    assert.ok(blocks.filter((b) => b.source === 'README.md').length >= 3, 'the README tour has sh blocks');
    assert.ok(blocks.filter((b) => b.source === 'docs/walkthrough.md').length >= 10, 'the walkthrough has sh blocks');
    assert.match(blocks[0]!.text, /^SY=\$\{SY:-http:\/\/127\.0\.0\.1:8000\}/, 'the first block names the server with $SY');
  });

  it("npx switchyard is this package's CLI", () => {
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const out = execFileSync('npx', ['--no-install', 'switchyard', '--version'], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    assert.equal(out.trim(), version);
  });

  it('every block exits 0 and prints what it shows', async () => {
    const bin = join(scratch, 'bin');
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(bin, 'npx'),
      `#!/bin/sh\n[ "$1" = switchyard ] || { echo "walkthrough test: only npx switchyard is provided" >&2; exit 127; }\nshift\nexec "${process.execPath}" "${CLI}" "$@"\n`,
    );
    chmodSync(join(bin, 'npx'), 0o755);
    const marker = (i: number): string => `@@walkthrough-block-${i}@@`;
    const script = [
      'set -eo pipefail',
      // An HTTP error fails the command, unless the command prints the status for the reader to see.
      'curl() { case "$*" in *"%{http_code}"*) command curl "$@" ;; *) command curl --fail-with-body "$@" ;; esac; }',
      ...blocks.flatMap((b, i) => [`printf '\\n%s\\n' '${marker(i)}'; printf '\\n%s\\n' '${marker(i)}' >&2`, b.text]),
      `printf '\\n%s\\n' '${marker(blocks.length)}'`,
    ].join('\n');
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(
        'bash',
        ['-c', script],
        {
          cwd: ROOT,
          maxBuffer: 64 << 20,
          timeout: 300_000,
          env: {
            ...process.env,
            SY: server.url,
            PATH: `${bin}:${process.env['PATH'] ?? ''}`,
            TMPDIR: scratch,
            SWITCHYARD_URL: '',
            SWITCHYARD_API_KEY: '',
          },
        },
        (e, so, se) => resolve({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout: so, stderr: se }),
      );
    });
    const outs = stdout.split(/\n@@walkthrough-block-\d+@@\n/).slice(1);
    const errs = stderr.split(/\n@@walkthrough-block-\d+@@\n/).slice(1);
    const ran = outs.length - 1; // the last marker follows the last block
    if (code !== 0) {
      const b = blocks[Math.max(0, ran - 1)]!;
      assert.fail(
        `the shell exited ${code} in ${b.source} sh block ${b.index + 1}:\n${b.text}\n--- stdout\n${outs.at(-1) ?? ''}\n--- stderr\n${errs.at(-1) ?? stderr}`,
      );
    }
    assert.equal(ran, blocks.length, 'every block ran');
    for (const [i, b] of blocks.entries()) {
      for (const shown of shownOutputs(b.text)) {
        assert.ok(outs[i]!.includes(shown), `${b.source} sh block ${b.index + 1} shows\n  ${shown}\nbut printed\n${outs[i]}`);
      }
    }
  });
});
