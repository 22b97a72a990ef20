// SiteFiles over our virtio-fs driver (FUSE over virtio): stat -> LOOKUP/GETATTR,
// open -> OPEN, read -> READ at an offset, close -> RELEASE.
//
// Two ways for file bytes to reach DMA memory:
//  - read(into): the webserver passes its body buffers; the driver READs straight into
//    them when they lie in its DMA memory (the guest, when both drivers share one
//    arena: file to socket without a copy), else with one copy from a pool chunk.
//  - readLoaned: with `loanAllocator` (memory the fs driver can READ into without a
//    copy, e.g. its transport's DMA arena), the file bytes land in a buffer owned here
//    and are lent to the webserver until its write callback.
import type { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import type { BufferAllocator } from './body-buffer-pool.js';
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
}

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

  constructor(
    private readonly fs: VirtioFsSiteFs,
    private readonly opts: VirtioFsSiteFilesOptions = {},
  ) {
    const r = opts.root ?? '/';
    this.root = r.endsWith('/') ? r.slice(0, -1) : r;
    this.loanBytes = opts.loanBytes ?? 64 * 1024;
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
    const h = await this.fs.open(this.sharePath(path));
    const handle: SiteFileHandle = {
      read: async (into, offset, length, position) => (await h.read(into, offset, length, position)).bytesRead,
      close: () => h.close(),
    };
    const alloc = this.opts.loanAllocator;
    if (alloc !== undefined) {
      handle.readLoaned = async (position: number, length: number): Promise<LoanedBytes> => {
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
