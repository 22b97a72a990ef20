// A writer (and a small reader) for the "newc" cpio format, the one the Linux kernel
// unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// Each entry is a 110-byte ASCII header, the path name (NUL-terminated), padding to a
// multiple of 4, the data, padding to a multiple of 4. The archive ends with an entry
// named "TRAILER!!!". Header fields are 8 hex digits each:
//
//   magic "070701" | ino | mode | uid | gid | nlink | mtime | filesize |
//   devmajor | devminor | rdevmajor | rdevminor | namesize | check
//
// The writer streams to a file descriptor, so a 100 MB binary is copied in chunks and
// never held in memory. It creates missing parent directories (mode 0755) on its own,
// because the kernel does not. Timestamps are 0 so the same inputs give the same bytes.

import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

const HEADER_SIZE = 110;
const MAGIC = '070701';
const TRAILER = 'TRAILER!!!';
const COPY_CHUNK = 1 << 20;

export class CpioError extends Error {
  readonly code = 'ERR_CPIO';
  constructor(message: string) {
    super(message);
    this.name = 'CpioError';
  }
}

/** Normalizes a guest path to the archive's form: no leading "/", no "." or "" parts. */
export function archivePath(guestPath: string): string {
  const parts: string[] = [];
  for (const p of guestPath.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new CpioError(`path escapes the archive root: ${guestPath}`);
    parts.push(p);
  }
  if (parts.length === 0) throw new CpioError(`empty path: ${JSON.stringify(guestPath)}`);
  return parts.join('/');
}

const hex8 = (n: number): string => {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new CpioError(`header field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
};

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

interface HeaderFields {
  mode: number;
  fileSize: number;
  rdevMajor?: number;
  rdevMinor?: number;
  nlink?: number;
}

/** Writes a newc archive to a file (or an already open file descriptor). */
export class CpioWriter {
  private readonly fd: number;
  private readonly ownsFd: boolean;
  private nextIno = 1;
  private offset = 0;
  private finished = false;
  /** Every path written so far, and whether it is a directory. */
  private readonly entries = new Map<string, 'dir' | 'other'>();

  constructor(target: string | number) {
    if (typeof target === 'number') {
      this.fd = target;
      this.ownsFd = false;
    } else {
      this.fd = openSync(target, 'w', 0o644);
      this.ownsFd = true;
    }
  }

  /** Bytes written so far. */
  get size(): number {
    return this.offset;
  }

  /** True when `guestPath` has been written (as anything). */
  has(guestPath: string): boolean {
    return this.entries.has(archivePath(guestPath));
  }

  /** A directory; parents are created as needed. Writing an existing directory again is a no-op. */
  directory(guestPath: string, mode = 0o755): void {
    const name = archivePath(guestPath);
    const existing = this.entries.get(name);
    if (existing === 'dir') return;
    if (existing) throw new CpioError(`${name} already exists and is not a directory`);
    this.parents(name);
    this.header(name, { mode: S_IFDIR | (mode & 0o7777), fileSize: 0, nlink: 2 });
    this.entries.set(name, 'dir');
  }

  /** A regular file with the given contents. */
  file(guestPath: string, data: string | Uint8Array, mode = 0o644): void {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    const name = this.claim(guestPath);
    this.header(name, { mode: S_IFREG | (mode & 0o7777), fileSize: bytes.length });
    this.write(bytes);
    this.pad(bytes.length);
  }

  /** A regular file copied from the host in chunks (the host file is not loaded whole). */
  fileFromHost(guestPath: string, hostPath: string, mode?: number): void {
    const src = openSync(hostPath, 'r');
    try {
      const st = fstatSync(src);
      if (!st.isFile()) throw new CpioError(`not a regular file: ${hostPath}`);
      const name = this.claim(guestPath);
      const m = mode ?? st.mode & 0o7777;
      this.header(name, { mode: S_IFREG | (m & 0o7777), fileSize: st.size });
      const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(st.size, 1)));
      let done = 0;
      while (done < st.size) {
        const n = readSync(src, buf, 0, Math.min(buf.length, st.size - done), done);
        if (n === 0) throw new CpioError(`${hostPath} shrank while being copied`);
        this.write(buf.subarray(0, n));
        done += n;
      }
      this.pad(st.size);
    } finally {
      closeSync(src);
    }
  }

  /** A symbolic link `guestPath` -> `target` (target is stored verbatim). */
  symlink(guestPath: string, target: string): void {
    const name = this.claim(guestPath);
    const bytes = Buffer.from(target, 'utf8');
    this.header(name, { mode: S_IFLNK | 0o777, fileSize: bytes.length });
    this.write(bytes);
    this.pad(bytes.length);
  }

  /** A character device node, e.g. charDevice('/dev/console', 5, 1, 0o600). */
  charDevice(guestPath: string, major: number, minor: number, mode = 0o600): void {
    const name = this.claim(guestPath);
    this.header(name, { mode: S_IFCHR | (mode & 0o7777), fileSize: 0, rdevMajor: major, rdevMinor: minor });
  }

  /** Writes the trailer and closes the file (when the writer opened it). */
  finish(): void {
    if (this.finished) return;
    this.header(TRAILER, { mode: 0, fileSize: 0, nlink: 1 }, 0);
    this.finished = true;
    if (this.ownsFd) closeSync(this.fd);
  }

  /** Closes the file without a trailer (after an error). */
  abort(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.ownsFd) closeSync(this.fd);
  }

  private claim(guestPath: string): string {
    const name = archivePath(guestPath);
    if (this.entries.has(name)) throw new CpioError(`duplicate path in archive: /${name}`);
    this.parents(name);
    this.entries.set(name, 'other');
    return name;
  }

  private parents(name: string): void {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const existing = this.entries.get(dir);
      if (existing === 'dir') continue;
      if (existing) throw new CpioError(`/${dir} is not a directory (needed for /${name})`);
      this.header(dir, { mode: S_IFDIR | 0o755, fileSize: 0, nlink: 2 });
      this.entries.set(dir, 'dir');
    }
  }

  private header(name: string, f: HeaderFields, ino = this.nextIno++): void {
    if (this.finished) throw new CpioError('archive already finished');
    const nameBytes = Buffer.from(name + '\0', 'utf8');
    const head =
      MAGIC +
      hex8(ino) +
      hex8(f.mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(f.nlink ?? 1) +
      hex8(0) + // mtime
      hex8(f.fileSize) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(f.rdevMajor ?? 0) +
      hex8(f.rdevMinor ?? 0) +
      hex8(nameBytes.length) +
      hex8(0); // check (only for "070702")
    this.write(Buffer.from(head, 'ascii'));
    this.write(nameBytes);
    this.pad(HEADER_SIZE + nameBytes.length);
  }

  private write(bytes: Uint8Array): void {
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done);
    this.offset += bytes.length;
  }

  private pad(n: number): void {
    const p = pad4(n);
    if (p) this.write(Buffer.alloc(p));
  }
}

/** One entry read back from an archive. */
export interface CpioEntry {
  name: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Buffer;
}

/**
 * Parses a newc archive (or several concatenated ones, as the kernel accepts). Stops at
 * the end of the buffer; NUL padding between archives is skipped. Strict: a bad magic
 * number or a length beyond the buffer throws.
 */
export function parseCpio(buf: Buffer): CpioEntry[] {
  const out: CpioEntry[] = [];
  let off = 0;
  const field = (at: number, i: number): number => {
    const s = buf.toString('ascii', at + 6 + i * 8, at + 14 + i * 8);
    if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new CpioError(`bad header field at offset ${at}: ${JSON.stringify(s)}`);
    return parseInt(s, 16);
  };
  while (off < buf.length) {
    if (buf[off] === 0) {
      off++;
      continue;
    }
    if (off + HEADER_SIZE > buf.length) throw new CpioError(`truncated header at offset ${off}`);
    const magic = buf.toString('ascii', off, off + 6);
    if (magic !== MAGIC && magic !== '070702') throw new CpioError(`bad magic ${JSON.stringify(magic)} at offset ${off}`);
    const [ino, mode, uid, gid, nlink, mtime, fileSize, , , rdevMajor, rdevMinor, nameSize] = Array.from(
      { length: 13 },
      (_, i) => field(off, i),
    ) as number[];
    const nameStart = off + HEADER_SIZE;
    if (nameSize! < 1 || nameStart + nameSize! > buf.length) throw new CpioError(`bad name size at offset ${off}`);
    const name = buf.toString('utf8', nameStart, nameStart + nameSize! - 1);
    const dataStart = nameStart + nameSize! + pad4(HEADER_SIZE + nameSize!);
    if (dataStart + fileSize! > buf.length) throw new CpioError(`truncated data for ${name}`);
    off = dataStart + fileSize! + pad4(fileSize!);
    if (name === TRAILER) continue;
    out.push({
      name,
      ino: ino!,
      mode: mode!,
      uid: uid!,
      gid: gid!,
      nlink: nlink!,
      mtime: mtime!,
      rdevMajor: rdevMajor!,
      rdevMinor: rdevMinor!,
      data: buf.subarray(dataStart, dataStart + fileSize!),
    });
  }
  return out;
}
