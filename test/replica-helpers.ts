/**
 * Replica processes for the cross-replica tests: `switchyard serve` started as a child process on a free port,
 * ready once it prints where it listens, with a keep-alive pool to it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Pool } from 'undici';

const CLI = new URL('../src/cli/main.js', import.meta.url).pathname;

export interface Replica {
  proc: ChildProcess;
  url: string;
  pool: Pool;
}

/** Start `switchyard serve --port 0 --log-level warn ...args`; `connections` sizes the pool to it; `env` adds to the environment. */
export async function startReplica(args: readonly string[], connections = 16, env: Record<string, string> = {}): Promise<Replica> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--grpc-port', '0', '--log-level', 'warn', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const url = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    const timer = setTimeout(() => reject(new Error('replica did not start within 60 s')), 60_000);
    lines.on('line', (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`replica exited with ${code}`));
    });
  });
  return { proc, url, pool: new Pool(url, { connections, pipelining: 1 }) };
}

/** Resolves when the replica logs that its batch worker stalled before a commit (SWITCHYARD_TEST_BATCH_STALL_AFTER). */
export function stallOf(r: Replica): Promise<void> {
  return new Promise((resolve) => {
    createInterface({ input: r.proc.stdout! }).on('line', (l) => {
      if (l.includes('batch worker stalled before commit')) resolve();
    });
  });
}

/** Close the pool and end the process with `signal` (SIGKILL for a crash), waiting for it to exit. */
export async function stopReplica(r: Replica, signal: NodeJS.Signals): Promise<void> {
  await r.pool.close().catch(() => undefined);
  if (r.proc.exitCode !== null || r.proc.signalCode !== null) return;
  const exited = new Promise((res) => r.proc.once('exit', res));
  r.proc.kill(signal);
  await exited;
}
