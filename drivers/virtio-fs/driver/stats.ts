// fs.Stats-, fs.Dirent- and fs.StatFs-like objects built from FUSE attributes.
import type { FuseAttr, FuseKstatfs } from '../fuse-codec.js';
import { DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from '../fuse-protocol.js';

const ms = (sec: number, nsec: number): number => sec * 1000 + nsec / 1e6;

export class FsStats {
  readonly dev = 0;
  readonly ino: number;
  readonly mode: number;
  readonly nlink: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdev: number;
  readonly size: number;
  readonly blksize: number;
  readonly blocks: number;
  readonly atimeMs: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
  readonly birthtimeMs: number;

  constructor(a: FuseAttr) {
    this.ino = a.ino;
    this.mode = a.mode;
    this.nlink = a.nlink;
    this.uid = a.uid;
    this.gid = a.gid;
    this.rdev = a.rdev;
    this.size = a.size;
    this.blksize = a.blksize;
    this.blocks = a.blocks;
    this.atimeMs = ms(a.atime, a.atimensec);
    this.mtimeMs = ms(a.mtime, a.mtimensec);
    this.ctimeMs = ms(a.ctime, a.ctimensec);
    this.birthtimeMs = 0; // FUSE 7.31 carries no birth time
  }

  get atime(): Date {
    return new Date(this.atimeMs);
  }
  get mtime(): Date {
    return new Date(this.mtimeMs);
  }
  get ctime(): Date {
    return new Date(this.ctimeMs);
  }
  get birthtime(): Date {
    return new Date(this.birthtimeMs);
  }
  isFile(): boolean {
    return (this.mode & S_IFMT) === S_IFREG;
  }
  isDirectory(): boolean {
    return (this.mode & S_IFMT) === S_IFDIR;
  }
  isSymbolicLink(): boolean {
    return (this.mode & S_IFMT) === S_IFLNK;
  }
  isFIFO(): boolean {
    return (this.mode & S_IFMT) === S_IFIFO;
  }
  isSocket(): boolean {
    return (this.mode & S_IFMT) === S_IFSOCK;
  }
  isCharacterDevice(): boolean {
    return (this.mode & S_IFMT) === S_IFCHR;
  }
  isBlockDevice(): boolean {
    return (this.mode & S_IFMT) === S_IFBLK;
  }
}

export class FsDirent {
  constructor(
    readonly name: string,
    /** The directory the entry was listed in (as given to readdir). */
    readonly parentPath: string,
    /** fuse_dirent.type: a DT_* value. */
    readonly type: number,
  ) {}
  isFile(): boolean {
    return this.type === DT_REG;
  }
  isDirectory(): boolean {
    return this.type === DT_DIR;
  }
  isSymbolicLink(): boolean {
    return this.type === DT_LNK;
  }
  isFIFO(): boolean {
    return this.type === DT_FIFO;
  }
  isSocket(): boolean {
    return this.type === DT_SOCK;
  }
  isCharacterDevice(): boolean {
    return this.type === DT_CHR;
  }
  isBlockDevice(): boolean {
    return this.type === DT_BLK;
  }
}

/** FUSE_SUPER_MAGIC, what statfs(2) reports as f_type on a FUSE mount. */
export const FUSE_SUPER_MAGIC = 0x65735546;

export interface FsStatFs {
  type: number;
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namelen: number;
}

export function statFsFrom(s: FuseKstatfs): FsStatFs {
  return { type: FUSE_SUPER_MAGIC, bsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, namelen: s.namelen };
}
