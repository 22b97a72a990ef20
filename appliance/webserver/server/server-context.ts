// What every connection of one server shares: options, files, cache, buffers,
// counters and the log.
import type { BodyBufferPool } from '../files/body-buffer-pool.js';
import type { HttpLimits } from '../http/http-limits.js';
import type { SiteFiles } from '../files/site-files.js';
import type { SmallFileCache } from '../files/small-file-cache.js';

export interface WebServerStats {
  connectionsAccepted: number;
  connectionsOpen: number;
  requests: number;
  /** Responses by status code. */
  responses: Record<number, number>;
  /** Body bytes of file responses. */
  fileBodyBytes: number;
  /** File chunks sent from the pooled body buffers, and from loaned (zero-copy read) buffers. */
  pooledChunks: number;
  loanedChunks: number;
  /** Responses served from the small-file cache. */
  cacheHits: number;
  /** Connections closed because a file changed size while it was sent, or reading it failed. */
  aborted: number;
}

export interface ServerContext {
  readonly files: SiteFiles;
  readonly limits: HttpLimits;
  readonly cache: SmallFileCache | null;
  readonly pool: BodyBufferPool;
  /** Small buffers (headReserve bytes) from the same allocator, for heads sent in front of loaned bytes. */
  readonly headPool: BodyBufferPool;
  /** Bytes reserved in front of the first body buffer for the response head. */
  readonly headReserve: number;
  /** Most file chunks one response has in flight (written, callback not yet fired). */
  readonly maxChunksInFlight: number;
  /** Files at least this large use SiteFileHandle.readLoaned when it exists. */
  readonly loanMinBytes: number;
  readonly stats: WebServerStats;
  readonly log: ((line: string) => void) | null;
}

export function newWebServerStats(): WebServerStats {
  return {
    connectionsAccepted: 0,
    connectionsOpen: 0,
    requests: 0,
    responses: {},
    fileBodyBytes: 0,
    pooledChunks: 0,
    loanedChunks: 0,
    cacheHits: 0,
    aborted: 0,
  };
}
