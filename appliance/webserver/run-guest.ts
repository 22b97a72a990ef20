// The webserver's entry point for the guest (and anywhere else): the boot code obtains
// a listener and a SiteFiles however it likes (our vsock and virtio-fs drivers, the
// Linux kernel's AF_VSOCK and virtiofs, node:net and node:fs) and calls runWebserver.
import type { Duplex } from 'node:stream';
import type { BufferAllocator } from './files/body-buffer-pool.js';
import type { ByteConnection } from './http/byte-connection.js';
import type { SiteFiles } from './files/site-files.js';
import type { SmallFileCacheOptions } from './files/small-file-cache.js';
import { WebServer, type WebServerOptions } from './server/web-server.js';

/** The guest port the webserver listens on by default (the host forwards TCP 8080 to it). */
export const DEFAULT_WEBSERVER_PORT = 8080;

/** Something that stops listening. */
export interface ListenHandle {
  close(): void | Promise<void>;
  /** The port actually bound, when it differs from the one asked (port 0). */
  readonly port?: number;
}

/**
 * Starts listening on `port` and calls onSocket for each accepted connection. Create
 * the sockets half-open capable (allowHalfOpen: true) so answers to requests sent
 * before the client's FIN still go out.
 */
export type ListenFunction = (port: number, onSocket: (socket: Duplex) => void) => ListenHandle | Promise<ListenHandle>;

/** As ListenFunction, for listeners whose connections are not Duplex streams (vsockListenRaw). */
export type RawListenFunction = (port: number, onConnection: (conn: ByteConnection) => void) => ListenHandle | Promise<ListenHandle>;

export interface RunWebserverOptions {
  /** Where connections come from: `listenRaw` when given (no node:stream per connection), else `listen`. */
  listen?: ListenFunction;
  listenRaw?: RawListenFunction;
  files: SiteFiles;
  port?: number;
  /** A request log line per request: true for console.log, or a function. */
  log?: boolean | ((line: string) => void);
  /** The small-file cache (false: off, as for the driver comparison benchmark). */
  cache?: Partial<SmallFileCacheOptions> | false;
  /** Body buffers from DMA memory: { alloc: (n) => vsock.allocBuffer(n), free: (b) => vsock.freeBuffer(b) }. */
  bufferAllocator?: BufferAllocator;
  /** Anything else WebServer takes. */
  server?: Omit<WebServerOptions, 'files' | 'log' | 'cache' | 'bufferAllocator'>;
}

export interface RunningWebserver {
  readonly server: WebServer;
  readonly port: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

export async function runWebserver(opts: RunWebserverOptions): Promise<RunningWebserver> {
  const port = opts.port ?? DEFAULT_WEBSERVER_PORT;
  const log = opts.log === true ? (line: string) => console.log(`[webserver] ${line}`) : opts.log === false ? undefined : opts.log;
  const server = new WebServer({
    ...opts.server,
    files: opts.files,
    cache: opts.cache,
    bufferAllocator: opts.bufferAllocator,
    log,
  });
  let handle: ListenHandle;
  try {
    if (opts.listenRaw !== undefined) handle = await opts.listenRaw(port, server.handleByteConnection);
    else if (opts.listen !== undefined) handle = await opts.listen(port, server.handleConnection);
    else throw new TypeError('runWebserver: listen or listenRaw is required');
  } catch (err) {
    server.close(); // nothing to serve: stop its idle sweep
    throw err;
  }
  const bound = handle.port ?? port;
  log?.(`listening on port ${bound}`);
  return {
    server,
    port: bound,
    async close() {
      // Connections first: a listener's close may wait for its connections to end.
      server.close();
      await handle.close();
    },
  };
}
