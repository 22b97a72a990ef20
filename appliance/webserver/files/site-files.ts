// The files of a website, as the webserver sees them. Shaped after what a FUSE-backed
// reader naturally provides (LOOKUP/GETATTR -> stat, OPEN -> open, READ at an offset
// -> read, RELEASE -> close), so it is implemented over node:fs/promises on the host
// and over our virtio-fs driver in the guest.
//
// Paths are site paths: absolute within the site ('/', '/docs/index.html'), already
// percent-decoded and checked by the webserver (no '.', '..', empty segments, NUL or
// backslashes). An implementation still keeps every path inside its root.

export type SiteEntryKind = 'file' | 'directory' | 'other';

export interface SiteFileStat {
  readonly kind: SiteEntryKind;
  /** Bytes, for a file. */
  readonly size: number;
  /** Last modification, milliseconds since the epoch. */
  readonly mtimeMs: number;
}

/**
 * File bytes lent by the implementation (for instance a DMA buffer that a FUSE_READ
 * filled). The borrower may hand `bytes` to a socket as they are and must call
 * release() exactly once, when nothing reads them any more (in the write callback).
 * The loan stays valid after the file handle is closed.
 */
export interface LoanedBytes {
  readonly bytes: Uint8Array;
  release(): void;
}

export interface SiteFileHandle {
  /**
   * Reads up to `length` bytes at file offset `position` into `into[offset ...]`.
   * Resolves the number of bytes read, 0 at the end of the file. May read fewer
   * bytes than asked; the caller loops.
   */
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /**
   * Optional zero-copy read: up to `length` bytes at `position` in a buffer the
   * implementation owns (a DMA buffer). An empty `bytes` means end of file.
   */
  readLoaned?(position: number, length: number): Promise<LoanedBytes>;
  close(): Promise<void>;
}

export interface SiteFiles {
  /** What is at `path`, or null when nothing is (or a parent is not a directory). */
  stat(path: string): Promise<SiteFileStat | null>;
  /** Opens the file at `path` for reading. Rejects when it is not there. */
  open(path: string): Promise<SiteFileHandle>;
}
