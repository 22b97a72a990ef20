// A least-recently-used cache of small files' bytes, keyed by site path and checked
// against the file's size and mtime on every hit (the caller stats the file anyway).
// Cached bodies are immutable and shared by concurrent responses.

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
  maxFileBytes: 64 * 1024,
  maxTotalBytes: 8 * 1024 * 1024,
});

interface Entry {
  body: Buffer;
  mtimeMs: number;
}

export class SmallFileCache {
  private readonly entries = new Map<string, Entry>();
  private totalBytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly options: SmallFileCacheOptions = DEFAULT_CACHE_OPTIONS) {}

  /** True when a file of this size would be cached. */
  accepts(size: number): boolean {
    return size <= this.options.maxFileBytes && size <= this.options.maxTotalBytes;
  }

  /** The cached bytes when they match size and mtime; moves the entry to the front. */
  get(path: string, size: number, mtimeMs: number): Buffer | null {
    const e = this.entries.get(path);
    if (e === undefined || e.body.length !== size || e.mtimeMs !== mtimeMs) {
      this.misses++;
      return null;
    }
    this.entries.delete(path);
    this.entries.set(path, e);
    this.hits++;
    return e.body;
  }

  set(path: string, body: Buffer, mtimeMs: number): void {
    if (!this.accepts(body.length)) return;
    this.delete(path);
    this.entries.set(path, { body, mtimeMs });
    this.totalBytes += body.length;
    const { maxEntries, maxTotalBytes } = this.options;
    for (const [key] of this.entries) {
      if (this.entries.size <= maxEntries && this.totalBytes <= maxTotalBytes) break;
      this.delete(key);
    }
  }

  delete(path: string): void {
    const e = this.entries.get(path);
    if (e === undefined) return;
    this.entries.delete(path);
    this.totalBytes -= e.body.length;
  }

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.totalBytes;
  }
}
