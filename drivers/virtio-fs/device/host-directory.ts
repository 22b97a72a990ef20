// A host directory served read-only: the file system operations behind the device's
// FUSE requests, on node ids and file handles it handed out itself.
//
// Confinement: a node is only ever reached by LOOKUP of a single name component (no
// '/', '.', '..') in a directory node; names are lstat'ed, never followed, so a
// symlink is a node of its own (READLINK gives its target, OPEN on it fails with ELOOP).
// Before using a node's host path we check that its directory part still resolves
// (realpath) to itself, i.e. no component was swapped for a symlink since; files are
// opened with O_NOFOLLOW and must be the inode that was looked up. A host that races
// renames against us can still win a window between check and use: this device is a
// test harness, not a security boundary against the host.
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { errnoOf } from '../errno.js';
import type { FuseAttr, FuseKstatfs } from '../fuse-codec.js';
import { DT_BLK, DT_CHR, DT_DIR, DT_FIFO, DT_LNK, DT_REG, DT_SOCK, DT_UNKNOWN, FUSE_NAME_MAX, O_ACCMODE, O_APPEND, O_CREAT, O_RDONLY, O_TRUNC } from '../fuse-protocol.js';
import { type FsNode, NodeTable } from './node-table.js';

/** A failure with the errno the FUSE reply will carry. */
export class HostFsError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'HostFsError';
  }
}

const E = (name: string): number => errnoOf(name)!;

export function errnoFromHostError(e: unknown): number {
  if (e instanceof HostFsError) return e.errno;
  const code = (e as { code?: unknown }).code;
  return (typeof code === 'string' && errnoOf(code)) || E('EIO');
}

export interface DirEntry {
  name: Uint8Array;
  type: number;
  ino: number;
}

interface OpenFile {
  kind: 'file';
  fd: number;
  node: FsNode;
}

interface OpenDir {
  kind: 'dir';
  node: FsNode;
  /** '.', '..', then the directory's entries, as listed at OPENDIR. */
  entries: DirEntry[];
}

const MAX_OPEN_HANDLES = 4096;
const utf8 = new TextEncoder();

function direntType(d: fs.Dirent): number {
  if (d.isFile()) return DT_REG;
  if (d.isDirectory()) return DT_DIR;
  if (d.isSymbolicLink()) return DT_LNK;
  if (d.isFIFO()) return DT_FIFO;
  if (d.isSocket()) return DT_SOCK;
  if (d.isCharacterDevice()) return DT_CHR;
  if (d.isBlockDevice()) return DT_BLK;
  return DT_UNKNOWN;
}

const NS_PER_S = 1_000_000_000n;

export function attrFromStats(st: fs.BigIntStats, nodeid: number): FuseAttr {
  const sec = (ns: bigint): number => Number(ns >= 0n ? ns / NS_PER_S : -((-ns + NS_PER_S - 1n) / NS_PER_S));
  const nsec = (ns: bigint): number => Number(((ns % NS_PER_S) + NS_PER_S) % NS_PER_S);
  return {
    // FUSE inode numbers are the node ids for the root (1), the host's otherwise.
    ino: nodeid === 1 ? 1 : Number(st.ino),
    size: Number(st.size),
    blocks: Number(st.blocks),
    atime: sec(st.atimeNs),
    mtime: sec(st.mtimeNs),
    ctime: sec(st.ctimeNs),
    atimensec: nsec(st.atimeNs),
    mtimensec: nsec(st.mtimeNs),
    ctimensec: nsec(st.ctimeNs),
    mode: Number(st.mode),
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    rdev: Number(st.rdev) >>> 0,
    blksize: Number(st.blksize),
    flags: 0,
  };
}

const keyOf = (st: fs.BigIntStats): string => `${st.dev}:${st.ino}`;

export class HostDirectory {
  readonly root: string;
  readonly nodes: NodeTable;
  private readonly handles = new Map<number, OpenFile | OpenDir>();
  private nextFh = 1;

  constructor(root: string) {
    this.root = fs.realpathSync(root);
    const st = fs.lstatSync(this.root, { bigint: true });
    if (!st.isDirectory()) throw new Error(`virtio-fs device: ${root} is not a directory`);
    this.nodes = new NodeTable(this.root, keyOf(st));
  }

  node(nodeid: number): FsNode {
    const n = this.nodes.get(nodeid);
    if (n === undefined) throw new HostFsError(E('ESTALE'), `unknown node id ${nodeid}`);
    return n;
  }

  /** Throws unless `dir` (a path this device built) still resolves to itself. */
  private checkDirectory(dir: string): void {
    let real: string;
    try {
      real = fs.realpathSync(dir);
    } catch (e) {
      throw new HostFsError(errnoFromHostError(e), `${dir}: ${(e as Error).message}`);
    }
    if (real !== dir) throw new HostFsError(E('EACCES'), `${dir} now resolves to ${real}, outside the served tree`);
  }

  private checkPath(node: FsNode, isDir: boolean): string {
    if (node.path === this.root) return this.root;
    this.checkDirectory(isDir ? node.path : dirname(node.path));
    return node.path;
  }

  lookup(parentId: number, name: string): { node: FsNode; attr: FuseAttr } {
    const parent = this.node(parentId);
    if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0') || Buffer.byteLength(name) > FUSE_NAME_MAX) {
      throw new HostFsError(E('EINVAL'), `bad name ${JSON.stringify(name)}`);
    }
    const dir = this.checkPath(parent, true);
    const path = join(dir, name);
    const st = fs.lstatSync(path, { bigint: true }); // never follows a symlink
    const node = this.nodes.lookedUp(keyOf(st), path);
    return { node, attr: attrFromStats(st, node.nodeid) };
  }

  getattr(nodeid: number, fh: number | undefined): FuseAttr {
    if (fh !== undefined) {
      const h = this.handles.get(fh);
      if (h?.kind === 'file') return attrFromStats(fs.fstatSync(h.fd, { bigint: true }), h.node.nodeid);
    }
    const node = this.node(nodeid);
    const st = fs.lstatSync(this.checkPath(node, node === this.nodes.root), { bigint: true });
    if (keyOf(st) !== node.key) throw new HostFsError(E('ESTALE'), `${node.path} is no longer the inode looked up`);
    return attrFromStats(st, node.nodeid);
  }

  open(nodeid: number, flags: number): number {
    const node = this.node(nodeid);
    if ((flags & O_ACCMODE) !== O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND)) !== 0) {
      throw new HostFsError(E('EROFS'), 'read-only file system');
    }
    if (this.handles.size >= MAX_OPEN_HANDLES) throw new HostFsError(E('EMFILE'), 'too many open handles');
    const path = this.checkPath(node, false);
    const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      if (keyOf(st) !== node.key) throw new HostFsError(E('ESTALE'), `${path} is no longer the inode looked up`);
      if (st.isDirectory()) throw new HostFsError(E('EISDIR'), `${path} is a directory`);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    const fh = this.nextFh++;
    this.handles.set(fh, { kind: 'file', fd, node });
    return fh;
  }

  /** The host fd of an open file handle. */
  fileFd(fh: number): number {
    const h = this.handles.get(fh);
    if (h === undefined || h.kind !== 'file') throw new HostFsError(E('EBADF'), `unknown file handle ${fh}`);
    return h.fd;
  }

  opendir(nodeid: number): number {
    const node = this.node(nodeid);
    if (this.handles.size >= MAX_OPEN_HANDLES) throw new HostFsError(E('EMFILE'), 'too many open handles');
    const path = this.checkPath(node, true);
    const st = fs.lstatSync(path, { bigint: true });
    if (!st.isDirectory()) throw new HostFsError(E('ENOTDIR'), `${path} is not a directory`);
    const entries: DirEntry[] = [
      { name: utf8.encode('.'), type: DT_DIR, ino: nodeid === 1 ? 1 : Number(st.ino) },
      { name: utf8.encode('..'), type: DT_DIR, ino: 0 },
    ];
    for (const d of fs.readdirSync(path, { withFileTypes: true, encoding: 'buffer' })) {
      let ino = 0;
      try {
        ino = Number(fs.lstatSync(join(path, d.name.toString()), { bigint: true }).ino);
      } catch {
        // raced with a removal: keep the entry, with an unknown inode number
      }
      entries.push({ name: new Uint8Array(d.name), type: direntType(d as unknown as fs.Dirent), ino });
    }
    const fh = this.nextFh++;
    this.handles.set(fh, { kind: 'dir', node, entries });
    return fh;
  }

  dirEntries(fh: number): { node: FsNode; entries: DirEntry[] } {
    const h = this.handles.get(fh);
    if (h === undefined || h.kind !== 'dir') throw new HostFsError(E('EBADF'), `unknown directory handle ${fh}`);
    return h;
  }

  release(fh: number, dir: boolean): void {
    const h = this.handles.get(fh);
    if (h === undefined || (h.kind === 'dir') !== dir) throw new HostFsError(E('EBADF'), `unknown ${dir ? 'directory' : 'file'} handle ${fh}`);
    this.handles.delete(fh);
    if (h.kind === 'file') fs.closeSync(h.fd);
  }

  readlink(nodeid: number): Uint8Array {
    const node = this.node(nodeid);
    const path = this.checkPath(node, false);
    const st = fs.lstatSync(path, { bigint: true });
    if (!st.isSymbolicLink()) throw new HostFsError(E('EINVAL'), `${path} is not a symbolic link`);
    return new Uint8Array(fs.readlinkSync(path, { encoding: 'buffer' }));
  }

  statfs(): FuseKstatfs {
    const s = fs.statfsSync(this.root);
    return { blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, bsize: s.bsize, namelen: FUSE_NAME_MAX, frsize: s.bsize };
  }

  get openHandles(): number {
    return this.handles.size;
  }

  /** DESTROY or device reset: close everything, forget every node but the root. */
  closeAll(): void {
    for (const h of this.handles.values()) if (h.kind === 'file') fs.closeSync(h.fd);
    this.handles.clear();
    this.nodes.clear();
  }
}
