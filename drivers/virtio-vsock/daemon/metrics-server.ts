// The metrics HTTP server: GET /metrics answers the Prometheus text exposition
// (metrics.ts). Anything else gets a short error and the server goes on: a malformed
// request 400, a request line and headers over MAX_HEADER_BYTES 431, a slow client
// 408, another method 405, another path 404. Refusals are counted and logged (the first
// ones, then every 1000th: a client controls how often).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { listenOn } from '../host/socket-path.js';
import { formatHostPort } from '../host/tcp-forward.js';
import { EventLoopDelaySampler } from './event-loop-delay.js';
import type { DaemonLogger, LogLevel } from './logger.js';
import { METRICS_CONTENT_TYPE, type MetricsHttpStats } from './metrics.js';
import type { MetricsConfig } from './settings.js';
import { isLoopback } from './validate.js';

/** Request line plus headers, in bytes (Node's default is 16 KiB; a scrape needs a few hundred). */
export const MAX_HEADER_BYTES = 8 * 1024;
export const MAX_CONNECTIONS = 32;
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const REFUSALS_LOGGED = 10;

export interface MetricsServerOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** The exposition text; a promise when the figures come from other threads (a rejection is answered 500). */
  render: (stats: MetricsHttpStats) => string | Promise<string>;
  log: (level: LogLevel, message: string) => void;
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

export class MetricsServer {
  readonly stats: MetricsHttpStats = { requests: 0, badRequests: 0 };
  readonly #server: Server;
  readonly #opts: MetricsServerOptions;

  private constructor(server: Server, opts: MetricsServerOptions) {
    this.#server = server;
    this.#opts = opts;
  }

  /** Listens on host:port; errors name the address (SocketPathError). */
  static async start(opts: MetricsServerOptions): Promise<MetricsServer> {
    const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS });
    const m = new MetricsServer(server, opts);
    server.maxConnections = MAX_CONNECTIONS;
    server.keepAliveTimeout = 5000;
    server.on('request', (req: IncomingMessage, res: ServerResponse) => m.#onRequest(req, res));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => m.#onClientError(err, socket));
    await listenOn(server, 'metrics', formatHostPort(opts.host, opts.port), (done) => server.listen(opts.port, opts.host, done));
    return m;
  }

  address(): AddressInfo {
    return this.#server.address() as AddressInfo;
  }

  /** The scrape URL. */
  get url(): string {
    const a = this.address();
    return `http://${formatHostPort(a.address, a.port)}/metrics`;
  }

  #refused(status: number, why: string, from: string): void {
    const n = ++this.stats.badRequests;
    if (n <= REFUSALS_LOGGED || n % 1000 === 0) {
      this.#opts.log('warn', `metrics: refused a request from ${from}: ${status} ${why}${n === REFUSALS_LOGGED ? ' (further refusals are counted, 1 line per 1000)' : ''}`);
    }
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const from = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    const url = req.url ?? '';
    const path = url.split('?', 1)[0]!;
    const send = (status: number, body: string, headers: Record<string, string> = {}): void => {
      res.writeHead(status, { 'Content-Type': status === 200 && path === '/metrics' ? METRICS_CONTENT_TYPE : 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      this.#refused(405, `method ${JSON.stringify(req.method?.slice(0, 20))}`, from);
      req.resume();
      send(405, 'only GET /metrics is served here\n', { Allow: 'GET, HEAD', Connection: 'close' });
      return;
    }
    if (path === '/metrics') {
      this.stats.requests++;
      const body = this.#opts.render(this.stats);
      if (typeof body === 'string') send(200, body);
      else {
        body.then(
          (text) => send(200, text),
          (err: Error) => {
            this.#opts.log('error', `metrics: ${err.message}`);
            send(500, `the metrics are not available: ${err.message}\n`);
          },
        );
      }
    } else if (path === '/') {
      this.stats.requests++;
      send(200, 'vhost-user-vsock: the metrics are at /metrics\n');
    } else {
      this.#refused(404, `path ${JSON.stringify(url.slice(0, 80))}`, from);
      send(404, 'not found: the metrics are at /metrics\n');
    }
  }

  #onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const from = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    let status = 400;
    let why = `malformed request (${err.code ?? err.message})`;
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      why = `request line and headers over ${MAX_HEADER_BYTES} bytes`;
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      why = 'request not complete in time';
    }
    this.#refused(status, why, from);
    const body = `${why}\n`;
    socket.end(`HTTP/1.1 ${status} ${REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    socket.destroySoon();
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }
}

/** The daemon's /metrics: the server and the sampler of this thread's event-loop delay that `render` reads. */
export interface DaemonMetricsEndpoint {
  server: MetricsServer;
  loopDelay: EventLoopDelaySampler;
  close(): Promise<void>;
}

/** Serves `render` at --metrics, samples this thread's loop delay, logs the URL and warns when other machines may reach it. */
export async function serveDaemonMetrics(m: MetricsConfig, render: MetricsServerOptions['render'], logger: DaemonLogger): Promise<DaemonMetricsEndpoint> {
  const server = await MetricsServer.start({ host: m.host, port: m.port, render, log: (level, message) => logger.log(level, null, message) });
  const loopDelay = new EventLoopDelaySampler();
  loopDelay.start();
  logger.log('info', null, `metrics at ${server.url}`);
  if (!isLoopback(m.host)) {
    logger.log('warn', null, `metrics at ${server.url} may be reachable from other machines (--metrics-allow-remote): they have no access control`);
  }
  return {
    server,
    loopDelay,
    close: async () => {
      loopDelay.stop();
      await server.close();
    },
  };
}
