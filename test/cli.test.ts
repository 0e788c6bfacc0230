import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const examples = fileURLToPath(new URL('../../examples/models', import.meta.url));

describe('switchyard CLI', () => {
  it('--help documents every command and serve flag', () => {
    const top = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    assert.equal(top.status, 0);
    assert.match(top.stdout, /serve \[options\]/);
    const serve = spawnSync(process.execPath, [cli, 'serve', '--help'], { encoding: 'utf8' });
    for (const flag of ['--model-repository', '--port', '--host', '--log-level', '--max-body-mb', '--execution-provider', '--shutdown-grace-ms']) {
      assert.ok(serve.stdout.includes(flag), `serve --help lacks ${flag}`);
    }
  });
  it('rejects bad flags with a message naming them', () => {
    const r = spawnSync(process.execPath, [cli, 'serve', '--port', 'abc'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /port must be an integer/);
    const e = spawnSync(process.execPath, [cli, 'serve', '--model-repository', '/nonexistent/dir', '--port', '0'], { encoding: 'utf8' });
    assert.notEqual(e.status, 0);
    assert.match(e.stderr, /model repository \/nonexistent\/dir cannot be read/);
  });
  it('serve starts on the shipped examples, prints where it listens, serves, and stops cleanly on SIGTERM', async () => {
    const p = spawn(process.execPath, [cli, 'serve', '--model-repository', examples, '--port', '0', '--grpc-port', '0', '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout.setEncoding('utf8');
    const url = await new Promise<string>((resolve, reject) => {
      p.stdout.on('data', (d: string) => {
        out += d;
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      p.once('exit', (c) => reject(new Error(`exited ${c}: ${out}`)));
    });
    assert.match(out, /mlp\[1:READY,2:READY\]/);
    const r = await fetch(`${url}/v2/health/ready`);
    assert.equal(r.status, 200);
    p.kill('SIGTERM');
    const [code] = await once(p, 'exit');
    assert.equal(code, 0);
  });
});
