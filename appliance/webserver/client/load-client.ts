// A small HTTP load generator for benchmarks where ab is missing or when keep-alive,
// pipelining-free, ab-like numbers are wanted from Node:
//   node dist/appliance/webserver/client/load-client.js --url http://127.0.0.1:8080/big.html
//        [-c CONCURRENCY] [-n REQUESTS] [-k] [--http10] [--json]
// Each of the c clients sends one request at a time (as ab does), on a new connection
// per request unless -k (keep-alive). Checks each status is 200 and each body has the
// announced length. Bad flags: a message naming the flag, exit status 2.
import { type Socket, createConnection } from 'node:net';
import { fileURLToPath } from 'node:url';
import { type LatencySummary, summarize } from '../../pingpong/latency-summary.js';
import { HttpResponseReader } from './http-response-reader.js';

export interface LoadOptions {
  host: string;
  port: number;
  path: string;
  concurrency: number;
  requests: number;
  keepAlive: boolean;
  http10: boolean;
}

export interface LoadResult extends LatencySummary {
  requests: number;
  concurrency: number;
  keepAlive: boolean;
  failed: number;
  bodyBytes: number;
  totalMs: number;
  requestsPerSecond: number;
  transferMBps: number;
}

export class LoadArgsError extends Error {
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(`${flag}: ${message}`);
    this.name = 'LoadArgsError';
  }
}

export const LOAD_USAGE = 'usage: load-client.js --url http://HOST:PORT/PATH [-c CONCURRENCY] [-n REQUESTS] [-k] [--http10] [--json]';

export function parseLoadArgs(argv: readonly string[]): LoadOptions & { json: boolean } {
  let url: URL | null = null;
  const o = { concurrency: 1, requests: 100, keepAlive: false, http10: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('-')) throw new LoadArgsError(flag, 'needs a value');
      return v;
    };
    const count = (): number => {
      const v = value();
      if (!/^\d{1,9}$/.test(v) || Number(v) < 1) throw new LoadArgsError(flag, `expected an integer >= 1, got ${JSON.stringify(v)}`);
      return Number(v);
    };
    switch (flag) {
      case '--url': {
        const v = value();
        try {
          url = new URL(v);
        } catch {
          throw new LoadArgsError(flag, `not a URL: ${JSON.stringify(v)}`);
        }
        if (url.protocol !== 'http:' || !url.port) throw new LoadArgsError(flag, `expected http://HOST:PORT/PATH with an explicit port, got ${JSON.stringify(v)}`);
        break;
      }
      case '-c':
      case '--concurrency':
        o.concurrency = count();
        break;
      case '-n':
      case '--requests':
        o.requests = count();
        break;
      case '-k':
      case '--keep-alive':
        o.keepAlive = true;
        break;
      case '--http10':
        o.http10 = true;
        break;
      case '--json':
        o.json = true;
        break;
      default:
        throw new LoadArgsError(flag, `unknown flag\n${LOAD_USAGE}`);
    }
  }
  if (url === null) throw new LoadArgsError('--url', `is required\n${LOAD_USAGE}`);
  const u: URL = url;
  return { ...o, host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port), path: (u.pathname || '/') + u.search };
}

function connect(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host, port, noDelay: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const version = o.http10 ? '1.0' : '1.1';
  const conn = o.keepAlive ? (o.http10 ? 'Connection: keep-alive\r\n' : '') : 'Connection: close\r\n';
  const request = Buffer.from(`GET ${o.path} HTTP/${version}\r\nHost: ${o.host}:${o.port}\r\nUser-Agent: tsvirtio-load\r\n${conn}\r\n`, 'latin1');
  const samples = new Float64Array(o.requests);
  let next = 0;
  let failed = 0;
  let bodyBytes = 0;
  const worker = async (): Promise<void> => {
    let socket: Socket | null = null;
    let reader: HttpResponseReader | null = null;
    try {
      while (next < o.requests) {
        const i = next++;
        const t0 = process.hrtime.bigint();
        if (socket === null) {
          socket = await connect(o.host, o.port);
          reader = new HttpResponseReader(socket);
        }
        socket.write(request);
        const r = await reader!.next();
        const announced = Number(r.headers['content-length']);
        if (r.status !== 200 || r.body.length !== announced) failed++;
        bodyBytes += r.body.length;
        if (!o.keepAlive || r.headers['connection'] === 'close') {
          socket.destroy();
          socket = null;
        }
        samples[i] = Number(process.hrtime.bigint() - t0);
      }
    } finally {
      socket?.destroy();
    }
  };
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.requests) }, worker));
  const totalNs = Number(process.hrtime.bigint() - t0);
  return {
    requests: o.requests,
    concurrency: o.concurrency,
    keepAlive: o.keepAlive,
    failed,
    bodyBytes,
    totalMs: Math.round(totalNs / 1e4) / 100,
    requestsPerSecond: Math.round((o.requests / (totalNs / 1e9)) * 100) / 100,
    transferMBps: Math.round((bodyBytes / (totalNs / 1e9) / 1e6) * 100) / 100,
    ...summarize(samples),
  };
}

async function main(): Promise<void> {
  let o: ReturnType<typeof parseLoadArgs>;
  try {
    o = parseLoadArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof LoadArgsError)) throw err;
    process.stderr.write(`load client: ${err.message}\n`);
    process.exit(2);
  }
  try {
    const r = await runLoad(o);
    if (o.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else {
      process.stdout.write(
        `${r.requests} requests, concurrency ${r.concurrency}${r.keepAlive ? ', keep-alive' : ''}: ${r.requestsPerSecond} req/s, ${r.transferMBps} MB/s, ${r.failed} failed\n` +
          `  per request: p50 ${r.p50Us} us  p90 ${r.p90Us} us  p99 ${r.p99Us} us  max ${r.maxUs} us  (mean ${r.meanUs})\n`,
      );
    }
    if (r.failed > 0) process.exit(1);
  } catch (err) {
    process.stderr.write(`load client: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
