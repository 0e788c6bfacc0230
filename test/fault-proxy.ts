/**
 * A TCP proxy a test controls, to put faults between a client and a real server (Postgres): forward, refuse
 * (nothing listens: ECONNREFUSED; open connections reset), hang (connections accepted and kept, nothing
 * forwarded either way: a server that stopped answering), reset (every open connection gets an RST) and
 * restore (listen again; bytes held while hung are delivered).
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

interface Pair {
  client: Socket;
  upstream: Socket | null;
  toUpstream: Buffer[];
  toClient: Buffer[];
}

export interface FaultProxy {
  readonly port: number;
  /** Refuse new connections and reset the open ones. */
  refuse(): Promise<void>;
  /** Accept and keep connections, forward nothing (new ones are not connected upstream). */
  hang(): void;
  /** Reset every open connection; keep forwarding. */
  reset(): void;
  /** Forward again: listen (after refuse), connect and flush what was held (after hang). */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/** Start a proxy on a free loopback port to `host:port`. */
export async function startFaultProxy(host: string, port: number): Promise<FaultProxy> {
  const pairs = new Set<Pair>();
  let hung = false;
  let server: Server | null = null;
  let listenPort = 0;

  const drop = (p: Pair): void => {
    pairs.delete(p);
    p.client.destroy();
    p.upstream?.destroy();
  };
  const linkUpstream = (p: Pair): void => {
    const up = connect(port, host);
    p.upstream = up;
    up.on('data', (b: Buffer) => {
      if (hung) p.toClient.push(b);
      else p.client.write(b);
    });
    up.on('error', () => drop(p));
    up.on('close', () => drop(p));
    for (const b of p.toUpstream.splice(0)) up.write(b);
  };
  const accept = (client: Socket): void => {
    const p: Pair = { client, upstream: null, toUpstream: [], toClient: [] };
    pairs.add(p);
    client.on('data', (b: Buffer) => {
      if (hung || p.upstream === null) p.toUpstream.push(b);
      else p.upstream.write(b);
    });
    client.on('error', () => drop(p));
    client.on('close', () => drop(p));
    if (!hung) linkUpstream(p);
  };
  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = createServer(accept);
      s.once('error', reject);
      s.listen(listenPort, '127.0.0.1', () => {
        server = s;
        listenPort = (s.address() as AddressInfo).port;
        resolve();
      });
    });
  const resetAll = (): void => {
    for (const p of [...pairs]) {
      pairs.delete(p);
      p.client.resetAndDestroy();
      p.upstream?.resetAndDestroy();
    }
  };
  const stopListening = (): void => {
    server?.close();
    server = null;
  };

  await listen();
  return {
    get port() {
      return listenPort;
    },
    async refuse() {
      stopListening();
      resetAll();
    },
    hang() {
      hung = true;
    },
    reset: resetAll,
    async restore() {
      hung = false;
      if (server === null) {
        // The port was ours a moment ago; retry briefly should another socket hold it in TIME_WAIT-like states.
        for (let i = 0; ; i++) {
          try {
            await listen();
            break;
          } catch (e) {
            if (i >= 50) throw e;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }
      for (const p of pairs) {
        if (p.upstream === null) linkUpstream(p);
        else for (const b of p.toUpstream.splice(0)) p.upstream.write(b);
        for (const b of p.toClient.splice(0)) p.client.write(b);
      }
    },
    async close() {
      stopListening();
      for (const p of [...pairs]) drop(p);
    },
  };
}
