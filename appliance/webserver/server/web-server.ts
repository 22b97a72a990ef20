// The static-file webserver: takes connections from any listener - Duplex sockets
// (node:net on the host, AF_VSOCK) or ByteConnections without node:stream (our vsock
// driver's listenRaw in the guest) - and files from a SiteFiles.
import type { Duplex } from 'node:stream';
import { BodyBufferPool, type BufferAllocator, heapAllocator } from '../files/body-buffer-pool.js';
import type { ByteConnection } from '../http/byte-connection.js';
import { DuplexByteConnection } from '../http/duplex-connection.js';
import { HttpConnection } from '../http/http-connection.js';
import { DEFAULT_HTTP_LIMITS, type HttpLimits } from '../http/http-limits.js';
import { newWebServerStats, type ServerContext, type WebServerStats } from './server-context.js';
import type { SiteFiles } from '../files/site-files.js';
import { DEFAULT_CACHE_OPTIONS, SmallFileCache, type SmallFileCacheOptions } from '../files/small-file-cache.js';

export interface WebServerOptions {
  files: SiteFiles;
  limits?: Partial<HttpLimits>;
  /** The file cache (LRU, bodies from bufferAllocator); false turns it off (default: on, files up to 1 MiB, 16 MiB in all). */
  cache?: Partial<SmallFileCacheOptions> | false;
  /** Where file-body buffers come from (default: the heap; the vsock driver's allocBuffer for zero copy). */
  bufferAllocator?: BufferAllocator;
  /** Bytes per file chunk and body buffer (default 64 KiB, one vsock packet). */
  chunkBytes?: number;
  /** Most chunks of one response in flight (default 4). */
  maxChunksInFlight?: number;
  /** Files at least this large are read with readLoaned when the files offer it (default 16 KiB). */
  loanMinBytes?: number;
  /** Idle buffers the pool keeps (default 64). */
  maxIdleBuffers?: number;
  /** Connections with nothing moving for this long are closed (default 60 s; 0 = never). */
  idleTimeoutMs?: number;
  /** A line per request (and per refused request) goes here. */
  log?: (line: string) => void;
}

/** Anything that emits 'connection' with a Duplex: net.Server, VsockServer. */
export interface ConnectionSource {
  on(event: 'connection', listener: (socket: Duplex) => void): unknown;
  off?(event: 'connection', listener: (socket: Duplex) => void): unknown;
}

const HEAD_RESERVE_BYTES = 512;

export class WebServer {
  readonly stats: WebServerStats;
  private readonly ctx: ServerContext;
  private readonly connections = new Set<HttpConnection>();
  private readonly sources: ConnectionSource[] = [];
  private sweepTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(opts: WebServerOptions) {
    const limits = { ...DEFAULT_HTTP_LIMITS, ...opts.limits };
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isSafeInteger(v) || v <= 0) throw new RangeError(`webserver: limit ${k} must be a positive integer, got ${String(v)}`);
    }
    const chunkBytes = opts.chunkBytes ?? 64 * 1024;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 2 * HEAD_RESERVE_BYTES) throw new RangeError(`webserver: chunkBytes must be at least ${2 * HEAD_RESERVE_BYTES}`);
    this.stats = newWebServerStats();
    this.ctx = {
      files: opts.files,
      limits,
      cache: opts.cache === false ? null : new SmallFileCache({ ...DEFAULT_CACHE_OPTIONS, ...opts.cache }, opts.bufferAllocator),
      pool: new BodyBufferPool(opts.bufferAllocator ?? heapAllocator, chunkBytes, opts.maxIdleBuffers ?? 64),
      headPool: new BodyBufferPool(opts.bufferAllocator ?? heapAllocator, HEAD_RESERVE_BYTES, opts.maxIdleBuffers ?? 64),
      headReserve: HEAD_RESERVE_BYTES,
      maxChunksInFlight: Math.max(1, opts.maxChunksInFlight ?? 4),
      loanMinBytes: opts.loanMinBytes ?? 16 * 1024,
      stats: this.stats,
      log: opts.log ?? null,
    };
    const idle = opts.idleTimeoutMs ?? 60_000;
    if (idle > 0) {
      this.sweepTimer = setInterval(() => this.sweepIdle(idle), Math.max(100, Math.min(idle / 2, 5000)));
      this.sweepTimer.unref();
    }
  }

  /** Serves HTTP on one connected socket. */
  readonly handleConnection = (socket: Duplex): void => {
    if (this.closed) {
      socket.destroy();
      return;
    }
    // Responses go out in several writes (head and first chunk, then further chunks):
    // Nagle's algorithm would hold the last one for the peer's delayed ACK.
    (socket as Duplex & { setNoDelay?: (on: boolean) => unknown }).setNoDelay?.(true);
    this.handleByteConnection(new DuplexByteConnection(socket));
  };

  /** Serves HTTP on one connection that is not a Duplex (the vsock driver's listenRaw). */
  readonly handleByteConnection = (conn: ByteConnection): void => {
    if (this.closed) {
      conn.destroy();
      return;
    }
    this.stats.connectionsAccepted++;
    this.stats.connectionsOpen++;
    this.connections.add(new HttpConnection(conn, this.ctx, this.connectionClosed));
  };

  private readonly connectionClosed = (c: HttpConnection): void => {
    if (this.connections.delete(c)) this.stats.connectionsOpen--;
  };

  /** Serves every connection `source` emits from now on. */
  attach(source: ConnectionSource): this {
    source.on('connection', this.handleConnection);
    this.sources.push(source);
    return this;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** The small-file cache's hits/misses/bytes (null when off). */
  get cache(): SmallFileCache | null {
    return this.ctx.cache;
  }

  /** Body buffers the pool has made (bounded by connections x maxChunksInFlight). */
  get buffersAllocated(): number {
    return this.ctx.pool.allocated;
  }

  /** Times the buffer allocator failed (DMA memory exhausted) and heap memory stood in. */
  get bufferFallbacks(): number {
    return this.ctx.pool.heapFallbacks;
  }

  /** Body buffers back in the pool; equal to buffersAllocated when none is in use (up to maxIdleBuffers). */
  get buffersIdle(): number {
    return this.ctx.pool.idleCount;
  }

  /** Stops taking connections from attached sources and destroys the open ones. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sources) s.off?.('connection', this.handleConnection);
    for (const c of [...this.connections]) c.destroy();
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.ctx.pool.drain();
    this.ctx.cache?.clear();
    this.ctx.headPool.drain();
  }

  private sweepIdle(idleMs: number): void {
    const deadline = Date.now() - idleMs;
    for (const c of this.connections) {
      if (c.lastActivityMs < deadline) c.destroy();
    }
  }
}
