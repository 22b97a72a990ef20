// SiteFiles over our virtio-fs driver (FUSE over virtio): stat -> LOOKUP/GETATTR,
// open -> OPEN, read -> READ at an offset, close -> RELEASE.
//
// Open handles are kept for reuse (open-handle-cache.ts, as nginx's open_file_cache):
// a file requested again is read through the handle already open, without an OPEN
// before and a RELEASE after - each a round trip to the device, costly under TCG. A
// cached handle is used while the path still names what it holds: the path's lstat
// (the driver's cached metadata, trusted as long as the FUSE server's entry/attr
// timeouts say, no longer) shows the same inode, size and mtime as the handle did when
// opened. Else it is dropped (RELEASE once unused) and the file opened again.
//
// Two ways for file bytes to reach DMA memory:
//  - read(into): the webserver passes its body buffers; the driver READs straight into
//    them when they lie in its DMA memory (the guest, when both drivers share one
//    arena: file to socket without a copy), else with one copy from a pool chunk.
//  - readLoaned: with `loanAllocator` (memory the fs driver can READ into without a
//    copy, e.g. its transport's DMA arena), the file bytes land in a buffer owned here
//    and are lent to the webserver until its write callback.
import type { FsStats, VirtioFsDriver, VirtioFsFileHandle } from '../../../drivers/virtio-fs/driver/index.js';
import type { BufferAllocator } from './body-buffer-pool.js';
import { type HandleLease, OpenHandleCache, type OpenHandleCacheStats } from './open-handle-cache.js';
import type { LoanedBytes, SiteEntryKind, SiteFileHandle, SiteFileStat, SiteFiles } from './site-files.js';

export interface VirtioFsSiteFilesOptions {
  /** The site's folder inside the share (default '/'). */
  root?: string;
  /** Memory for loaned reads; without it the handles have no readLoaned. */
  loanAllocator?: BufferAllocator;
  /** Bytes per loan buffer (default 64 KiB, one vsock packet). */
  loanBytes?: number;
  /** Idle loan buffers kept (default 32). */
  maxIdleLoans?: number;
  /** Driver file handles kept open for reuse (default 64; 0: OPEN and RELEASE per request). */
  openHandleCache?: number;
}

export const DEFAULT_OPEN_HANDLE_CACHE = 64;

/** A driver handle and its file as it was when opened (what validity is checked against). */
interface OpenFile {
  readonly h: VirtioFsFileHandle;
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

const sameFile = (st: FsStats, f: OpenFile): boolean => st.ino === f.ino && st.size === f.size && st.mtimeMs === f.mtimeMs;
const CLOSED: Promise<void> = Promise.resolve();

/** One request's use of a cached handle. */
interface Lent {
  closed: boolean;
}
const NO_STATS: OpenHandleCacheStats = Object.freeze({ hits: 0, misses: 0, staleDrops: 0, evictions: 0, openHandles: 0, cached: 0, releaseErrors: 0 });

const NOT_THERE = new Set(['ENOENT', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP']);

/** What the site files need of the driver; lstatCached, when there, answers cached stats without a promise. */
export type VirtioFsSiteFs = Pick<VirtioFsDriver, 'lstat' | 'open'> & Partial<Pick<VirtioFsDriver, 'lstatCached'>>;

/** Absolute, without NUL and without a '.' or '..' component (a loop: this runs per request). */
function isSitePath(p: string): boolean {
  const n = p.length;
  if (n === 0 || p.charCodeAt(0) !== 0x2f) return false;
  let seg = 1;
  for (let i = 1; i <= n; i++) {
    const ch = i < n ? p.charCodeAt(i) : 0x2f;
    if (ch === 0) return false;
    if (ch !== 0x2f) continue;
    const len = i - seg;
    if ((len === 1 || len === 2) && p.charCodeAt(seg) === 0x2e && (len === 1 || p.charCodeAt(seg + 1) === 0x2e)) return false;
    seg = i + 1;
  }
  return true;
}

export class VirtioFsSiteFiles implements SiteFiles {
  private readonly root: string;
  private readonly loanBytes: number;
  private readonly idleLoans: Uint8Array[] = [];
  /** Loans handed out and not yet released. */
  loansOutstanding = 0;
  /** null: no reuse, a handle per open() as before. */
  private readonly handles: OpenHandleCache<OpenFile> | null;

  constructor(
    private readonly fs: VirtioFsSiteFs,
    private readonly opts: VirtioFsSiteFilesOptions = {},
  ) {
    const r = opts.root ?? '/';
    this.root = r.endsWith('/') ? r.slice(0, -1) : r;
    this.loanBytes = opts.loanBytes ?? 64 * 1024;
    const n = opts.openHandleCache ?? DEFAULT_OPEN_HANDLE_CACHE;
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`openHandleCache must be a whole number >= 0, got ${n}`);
    this.handles =
      n === 0
        ? null
        : new OpenHandleCache<OpenFile>(
            {
              open: (full) => this.openFile(full),
              isCurrent: (full, f) => this.isCurrent(full, f),
              release: (f) => f.h.close(),
            },
            n,
          );
  }

  /** The open-handle cache's counters (all 0 with openHandleCache 0). */
  get openHandleStats(): OpenHandleCacheStats {
    return this.handles?.stats ?? NO_STATS;
  }

  /**
   * Releases every cached handle (those in use when their response is done). Call
   * before closing the driver; open() still works after, without keeping handles.
   */
  async close(): Promise<void> {
    await this.handles?.close();
  }

  private sharePath(path: string): string {
    if (!isSitePath(path)) throw new Error(`not a site path: ${JSON.stringify(path)}`);
    return this.root + path;
  }

  async stat(path: string): Promise<SiteFileStat | null> {
    try {
      // lstat: a symlink as the last component is not followed (404). The share itself
      // is confined by virtiofsd on the host.
      const full = this.sharePath(path);
      const st = this.fs.lstatCached?.(full) ?? (await this.fs.lstat(full));
      const kind: SiteEntryKind = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';
      return { kind, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      if (NOT_THERE.has((err as { code?: string }).code ?? '')) return null;
      throw err;
    }
  }

  async open(path: string): Promise<SiteFileHandle> {
    const full = this.sharePath(path);
    const cache = this.handles;
    if (cache === null) {
      const h = await this.fs.open(full);
      return this.siteHandle(h, null, () => h.close());
    }
    const lease: HandleLease<OpenFile> = await cache.acquire(full);
    const lent: Lent = { closed: false };
    return this.siteHandle(lease.handle.h, lent, () => {
      // Drops this request's reference; the driver handle stays open for the next one.
      if (!lent.closed) {
        lent.closed = true;
        cache.unref(lease);
      }
      return CLOSED;
    });
  }

  /** Opens a file for the cache, with its identity as the handle sees it. */
  private async openFile(full: string): Promise<OpenFile> {
    const h = await this.fs.open(full);
    try {
      const st = await h.stat(); // the attributes resolve() just used: normally no request
      return { h, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      h.close().catch(() => {});
      throw err;
    }
  }

  /** Whether the path still names the file `f` holds, by the driver's current metadata. */
  private isCurrent(full: string, f: OpenFile): boolean | Promise<boolean> {
    if (f.h.closed) return false; // e.g. the driver closed it
    const st = this.fs.lstatCached?.(full) ?? null;
    if (st !== null) return sameFile(st, f);
    return this.fs.lstat(full).then((s) => sameFile(s, f));
  }

  /** `lent`: a shared cached handle, refused for reads once this request closed it (it may be released by then). */
  private siteHandle(h: VirtioFsFileHandle, lent: Lent | null, close: () => Promise<void>): SiteFileHandle {
    const handle: SiteFileHandle = {
      read: async (into, offset, length, position) => {
        if (lent?.closed) throw ebadf(h.path);
        return (await h.read(into, offset, length, position)).bytesRead;
      },
      close,
    };
    const alloc = this.opts.loanAllocator;
    if (alloc !== undefined) {
      handle.readLoaned = async (position: number, length: number): Promise<LoanedBytes> => {
        if (lent?.closed) throw ebadf(h.path);
        const buf = this.idleLoans.pop() ?? alloc.alloc(this.loanBytes);
        let n: number;
        try {
          n = (await h.read(buf, 0, Math.min(length, this.loanBytes), position)).bytesRead;
        } catch (err) {
          this.giveBack(buf);
          throw err;
        }
        this.loansOutstanding++;
        let released = false;
        return {
          bytes: buf.subarray(0, n),
          release: () => {
            if (released) return;
            released = true;
            this.loansOutstanding--;
            this.giveBack(buf);
          },
        };
      };
    }
    return handle;
  }

  private giveBack(buf: Uint8Array): void {
    if (this.idleLoans.length < (this.opts.maxIdleLoans ?? 32)) this.idleLoans.push(buf);
    else this.opts.loanAllocator?.free?.(buf);
  }
}

function ebadf(path: string): Error {
  return Object.assign(new Error(`EBADF: file handle closed, read '${path}'`), { code: 'EBADF' });
}
