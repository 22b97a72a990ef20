// A least-recently-used cache of files' bytes, keyed by site path and checked against
// the file's size and mtime on every hit (the caller stats the file anyway: with our
// virtio-fs driver a stat inside the FUSE server's attribute timeout costs no request,
// so the server's validity window decides how long a page may be stale, as for Linux's
// page cache over virtiofs).
//
// Bodies come from the server's buffer allocator: with the vsock driver's allocBuffer
// they are DMA memory, and a cached page goes out as zero-copy transmit descriptors.
// A body is shared by concurrent responses and never written after it is filled; each
// response holds a reference until its write completes (for zero copy: until the
// device returned the descriptors), so an evicted body is freed only when the last
// response that sends it is done.
import { type BufferAllocator, heapAllocator } from './body-buffer-pool.js';

export interface SmallFileCacheOptions {
  /** Most files kept. */
  maxEntries: number;
  /** Largest file cached, in bytes. */
  maxFileBytes: number;
  /** Most bytes kept in all. */
  maxTotalBytes: number;
}

export const DEFAULT_CACHE_OPTIONS: Readonly<SmallFileCacheOptions> = Object.freeze({
  maxEntries: 256,
  maxFileBytes: 1024 * 1024,
  maxTotalBytes: 16 * 1024 * 1024,
});

/** A cached body; hold it (retain/release) while a response is sending it. */
export interface CachedBody {
  readonly body: Buffer;
  mtimeMs: number;
  /** Responses sending it now. */
  refs: number;
  /** Out of the cache: freed when refs reaches 0. */
  evicted: boolean;
  /** What the allocator returned (given back to its free), null for a heap body. */
  readonly raw: Uint8Array | null;
}

export class SmallFileCache {
  private readonly entries = new Map<string, CachedBody>();
  private totalBytes = 0;
  hits = 0;
  misses = 0;
  /** Bodies that could not come from the allocator (DMA memory full) and live on the heap. */
  heapFallbacks = 0;

  constructor(
    readonly options: SmallFileCacheOptions = DEFAULT_CACHE_OPTIONS,
    private readonly allocator: BufferAllocator = heapAllocator,
  ) {}

  /** True when a file of this size would be cached. */
  accepts(size: number): boolean {
    return size <= this.options.maxFileBytes && size <= this.options.maxTotalBytes;
  }

  /** The cached body when it matches size and mtime (moved to the front), else null. */
  get(path: string, size: number, mtimeMs: number): CachedBody | null {
    const e = this.entries.get(path);
    if (e === undefined || e.body.length !== size || e.mtimeMs !== mtimeMs) {
      this.misses++;
      return null;
    }
    this.entries.delete(path);
    this.entries.set(path, e);
    this.hits++;
    return e;
  }

  /** A buffer of `size` bytes for a body about to be read (put it in with set, or drop it with discard). */
  allocate(size: number): CachedBody {
    let body: Buffer;
    let raw: Uint8Array | null = null;
    try {
      raw = this.allocator.alloc(size);
      body = Buffer.isBuffer(raw) && raw.length === size ? raw : Buffer.from(raw.buffer, raw.byteOffset, size);
    } catch {
      this.heapFallbacks++;
      body = Buffer.allocUnsafeSlow(size);
    }
    return { body, mtimeMs: 0, refs: 0, evicted: true, raw };
  }

  /** Caches a body filled since allocate() (replacing the path's old one); returns the entry to send. */
  set(path: string, e: CachedBody, mtimeMs: number): CachedBody {
    e.mtimeMs = mtimeMs;
    e.evicted = false;
    this.delete(path);
    this.entries.set(path, e);
    this.totalBytes += e.body.length;
    const { maxEntries, maxTotalBytes } = this.options;
    for (const [key] of this.entries) {
      if (this.entries.size <= maxEntries && this.totalBytes <= maxTotalBytes) break;
      this.delete(key);
    }
    return e;
  }

  /** Frees a body from allocate() that did not go into the cache (the read failed). */
  discard(filled: CachedBody): void {
    if (filled.refs === 0) this.free(filled);
  }

  retain(e: CachedBody): void {
    e.refs++;
  }

  release(e: CachedBody): void {
    if (--e.refs === 0 && e.evicted) this.free(e);
  }

  delete(path: string): void {
    const e = this.entries.get(path);
    if (e === undefined) return;
    this.entries.delete(path);
    this.totalBytes -= e.body.length;
    e.evicted = true;
    if (e.refs === 0) this.free(e);
  }

  /** Empties the cache (server shutdown); bodies still being sent are freed when done. */
  clear(): void {
    for (const key of [...this.entries.keys()]) this.delete(key);
  }

  private free(e: CachedBody): void {
    if (e.raw !== null) this.allocator.free?.(e.raw);
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }
}
