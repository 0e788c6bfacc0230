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
