// An in-process virtio file system device (virtio 1.2, 5.11; device id 26) serving a
// host directory read-only: FUSE requests arrive as descriptor chains
// [fuse_in_header + args (device-readable) | fuse_out_header + reply (device-writable)]
// on the hiprio queue (0) and the request queue (1); FORGET and BATCH_FORGET get no
// reply (the chain is returned with 0 bytes written).
//
// The driver is hostile: a chain too short for a header is returned unanswered; a
// malformed request, an unknown node id or file handle, or a reply that does not fit
// the writable part is answered with an errno. Nothing a request carries can crash the
// device or make it read outside guest memory (the chain walk checks every segment).
import { readSync } from 'node:fs';
import type { DeviceContext, VirtioDeviceModel } from '../../../kernel/transport/virtio-device.js';
import type { DescriptorChain, VirtqueueDevice } from '../../../kernel/virtqueue/device-queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureBit } from '../../../kernel/virtqueue/layout.js';
import { errnoOf } from '../errno.js';
import {
  FuseCodecError,
  type FuseEntryOut,
  decodeBatchForgetIn,
  decodeForgetIn,
  decodeGetattrIn,
  decodeInHeader,
  decodeInitIn,
  decodeName,
  decodeOpenIn,
  decodeReadIn,
  decodeReleaseIn,
  direntPlusSize,
  emptyInHeader,
  encodeAttrOut,
  encodeDirent,
  encodeDirentPlus,
  encodeEntryOut,
  encodeInitOut,
  encodeOpenOut,
  encodeOutHeader,
  encodeStatfsOut,
} from '../fuse-codec.js';
import {
  FUSE_ASYNC_READ,
  FUSE_COMPAT_22_INIT_OUT_SIZE,
  FUSE_DO_READDIRPLUS,
  FUSE_GETATTR_FH,
  FUSE_INIT_OUT_SIZE,
  FUSE_IN_HEADER_SIZE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MAX_PAGES,
  FUSE_MIN_MINOR_VERSION,
  FUSE_OUT_HEADER_SIZE,
  FUSE_PAGE_SIZE,
  FUSE_PARALLEL_DIROPS,
  FuseOpcode as Op,
} from '../fuse-protocol.js';
import { VIRTIO_FS_HIPRIO_QUEUE, VIRTIO_ID_FS, encodeVirtioFsConfig } from '../virtio-fs-config.js';
import { HostDirectory, HostFsError, errnoFromHostError } from './host-directory.js';

export interface VirtioFsDeviceOptions {
  /** The host directory to serve (read-only). */
  root: string;
  /** The mount tag in the device configuration (1..36 bytes of UTF-8). */
  tag: string;
  maxQueueSize?: number;
  /** entry_valid / attr_valid in replies, in seconds (default 1, as virtiofsd's cache=auto). */
  cacheTimeoutSeconds?: number;
  /** Offer the packed ring layout, VIRTIO_F_RING_PACKED (default true; false: split rings only). */
  packed?: boolean;
}

export interface VirtioFsDeviceStats {
  requests: number;
  errorReplies: number;
  /** Chains that could not be answered at all (no room for a header, or no readable header). */
  unanswerable: number;
  forgets: number;
  forgottenLookups: number;
  /** Lookups granted since start (LOOKUP replies and READDIRPLUS entries). */
  lookupsGranted: number;
  nodes: number;
  lookups: number;
  openHandles: number;
}

/** Requests that would write get EROFS; everything else we do not implement, ENOSYS. */
const WRITE_OPCODES = new Set<number>([
  Op.SETATTR, Op.SYMLINK, Op.MKNOD, Op.MKDIR, Op.UNLINK, Op.RMDIR, Op.RENAME, Op.LINK, Op.WRITE, Op.CREATE,
  Op.SETXATTR, Op.REMOVEXATTR, Op.FALLOCATE, Op.RENAME2, Op.COPY_FILE_RANGE, Op.TMPFILE,
]);

const SUPPORTED_INIT_FLAGS = FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS | FUSE_DO_READDIRPLUS;
const DEVICE_MAX_PAGES = 256; // 1 MiB per READ
const MAX_READ_BYTES = DEVICE_MAX_PAGES * FUSE_PAGE_SIZE;
const MAX_DIR_REPLY_BYTES = 128 * 1024;
const REQUEST_SCRATCH_BYTES = 8192;

const E = (name: string): number => errnoOf(name)!;
const utf8Decoder = new TextDecoder();

export class VirtioFsDevice implements VirtioDeviceModel {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_FS;
  readonly features: bigint;
  readonly numQueues = 2; // hiprio + one request queue
  readonly maxQueueSize: number;
  readonly host: HostDirectory;
  private readonly configBytes: Uint8Array;
  private readonly timeout: number;
  private ctx: DeviceContext | null = null;
  private readonly queues: (VirtqueueDevice | null)[] = [null, null];
  private initialized = false;
  private readonly hdr = emptyInHeader();
  private readonly inBuf = Buffer.alloc(REQUEST_SCRATCH_BYTES);
  private readonly inDv = new DataView(this.inBuf.buffer, this.inBuf.byteOffset, this.inBuf.byteLength);
  private readonly outBuf = Buffer.alloc(FUSE_OUT_HEADER_SIZE + MAX_DIR_REPLY_BYTES + 4096);
  private readonly outDv = new DataView(this.outBuf.buffer, this.outBuf.byteOffset, this.outBuf.byteLength);
  private readonly counters = { requests: 0, errorReplies: 0, unanswerable: 0, forgets: 0, forgottenLookups: 0, lookupsGranted: 0 };

  constructor(opts: VirtioFsDeviceOptions) {
    this.name = `virtio-fs ${opts.tag}`;
    this.host = new HostDirectory(opts.root);
    this.configBytes = encodeVirtioFsConfig({ tag: opts.tag, numRequestQueues: 1 });
    this.maxQueueSize = opts.maxQueueSize ?? 128;
    this.timeout = opts.cacheTimeoutSeconds ?? 1;
    // Either ring layout (virtio 1.2, 2.7 / 2.8): the queues are the same to this model.
    this.features = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | featureBit(VIRTIO_F_INDIRECT_DESC) | (opts.packed === false ? 0n : featureBit(VIRTIO_F_RING_PACKED));
  }

  get stats(): VirtioFsDeviceStats {
    return { ...this.counters, nodes: this.host.nodes.size, openHandles: this.host.openHandles, lookups: this.host.nodes.totalLookups };
  }

  config(): Uint8Array {
    return this.configBytes.slice();
  }

  activate(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  queueReady(index: number, queue: VirtqueueDevice): void {
    this.queues[index] = queue;
  }

  queueStopped(index: number): void {
    this.queues[index] = null;
  }

  reset(): void {
    this.queues[0] = this.queues[1] = null;
    this.host.closeAll();
    this.initialized = false;
  }

  kick(index: number): void {
    const q = this.queues[index];
    if (!q) return;
    for (;;) {
      let chain: DescriptorChain | null;
      while ((chain = q.take()) !== null) q.push(chain, this.serve(index, chain));
      if (q.flush()) this.ctx?.interrupt(index);
      if (!q.enableNotifications()) break;
    }
  }

  /** Serves one chain; returns the bytes written into its writable part. */
  serve(queueIndex: number, chain: DescriptorChain): number {
    this.counters.requests++;
    const readable = chain.readableLength;
    if (readable < FUSE_IN_HEADER_SIZE) {
      this.counters.unanswerable++;
      return 0;
    }
    const got = chain.read(0, this.inBuf, 0, Math.min(readable, this.inBuf.length));
    const h = this.hdr;
    try {
      decodeInHeader(this.inDv, 0, readable, h);
    } catch (e) {
      const unique = e instanceof FuseCodecError ? e.unique : -1;
      if (unique < 0) {
        this.counters.unanswerable++;
        return 0;
      }
      return this.replyError(chain, unique, E('EINVAL'));
    }
    // Arguments we parse must be in the bytes we copied (requests we parse are small).
    const bodyLen = Math.min(h.len, got) - FUSE_IN_HEADER_SIZE;
    if (h.opcode === Op.FORGET || h.opcode === Op.BATCH_FORGET) {
      this.forget(h.opcode, h.nodeid, bodyLen);
      return 0; // no reply (fuse.h: FORGET has none)
    }
    if (queueIndex === VIRTIO_FS_HIPRIO_QUEUE && h.opcode === Op.INTERRUPT) return 0;
    try {
      if (!this.initialized && h.opcode !== Op.INIT) return this.replyError(chain, h.unique, E('EIO'));
      if (h.opcode === Op.READ) return this.read(chain, h.unique, bodyLen);
      const n = this.dispatch(chain, h.opcode, h.nodeid, bodyLen);
      const total = FUSE_OUT_HEADER_SIZE + n;
      if (total > chain.writableLength) return this.replyError(chain, h.unique, E('EINVAL'));
      encodeOutHeader(this.outDv, 0, total, 0, h.unique);
      return chain.write(0, this.outBuf, 0, total);
    } catch (e) {
      const errno = e instanceof FuseCodecError ? E('EINVAL') : errnoFromHostError(e);
      return this.replyError(chain, h.unique, errno);
    }
  }

  private replyError(chain: DescriptorChain, unique: number, errno: number): number {
    this.counters.errorReplies++;
    if (chain.writableLength < FUSE_OUT_HEADER_SIZE) {
      this.counters.unanswerable++;
      return 0;
    }
    encodeOutHeader(this.outDv, 0, FUSE_OUT_HEADER_SIZE, -errno, unique);
    return chain.write(0, this.outBuf, 0, FUSE_OUT_HEADER_SIZE);
  }

  private forget(opcode: number, nodeid: number, bodyLen: number): void {
    try {
      if (opcode === Op.FORGET) {
        const n = decodeForgetIn(this.inDv, FUSE_IN_HEADER_SIZE, bodyLen);
        this.counters.forgets++;
        if (this.host.nodes.forget(nodeid, n)) this.counters.forgottenLookups += n;
      } else {
        for (const f of decodeBatchForgetIn(this.inDv, FUSE_IN_HEADER_SIZE, bodyLen)) {
          this.counters.forgets++;
          if (this.host.nodes.forget(f.nodeid, f.nlookup)) this.counters.forgottenLookups += f.nlookup;
        }
      }
    } catch {
      this.counters.unanswerable++; // a malformed FORGET has nobody to answer to
    }
  }

  /** Writes the reply body at outBuf[16...]; returns its length. */
  private dispatch(chain: DescriptorChain, opcode: number, nodeid: number, bodyLen: number): number {
    const B = FUSE_OUT_HEADER_SIZE;
    const A = FUSE_IN_HEADER_SIZE;
    const dv = this.outDv;
    switch (opcode) {
      case Op.INIT:
        return this.init(bodyLen);
      case Op.LOOKUP: {
        const name = decodeName(this.inBuf, A, bodyLen);
        const { node, attr } = this.host.lookup(nodeid, name);
        this.counters.lookupsGranted++;
        return encodeEntryOut(dv, B, this.entry(node.nodeid, attr));
      }
      case Op.GETATTR: {
        const g = decodeGetattrIn(this.inDv, A, bodyLen);
        const attr = this.host.getattr(nodeid, (g.getattrFlags & FUSE_GETATTR_FH) !== 0 ? g.fh : undefined);
        return encodeAttrOut(dv, B, { attrValid: this.timeout, attrValidNsec: 0, attr });
      }
      case Op.OPEN: {
        const o = decodeOpenIn(this.inDv, A, bodyLen);
        return encodeOpenOut(dv, B, this.host.open(nodeid, o.flags), 0);
      }
      case Op.OPENDIR:
        decodeOpenIn(this.inDv, A, bodyLen);
        return encodeOpenOut(dv, B, this.host.opendir(nodeid), 0);
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(chain, opcode === Op.READDIRPLUS, bodyLen);
      case Op.RELEASE:
      case Op.RELEASEDIR:
        this.host.release(decodeReleaseIn(this.inDv, A, bodyLen).fh, opcode === Op.RELEASEDIR);
        return 0;
      case Op.READLINK: {
        const target = this.host.readlink(nodeid);
        if (target.length > chain.writableLength - B) throw new HostFsError(E('ENAMETOOLONG'), 'link target does not fit the reply');
        this.outBuf.set(target, B);
        return target.length;
      }
      case Op.STATFS:
        return encodeStatfsOut(dv, B, this.host.statfs());
      case Op.FLUSH:
        return 0;
      case Op.DESTROY:
        this.host.closeAll();
        this.initialized = false;
        return 0;
      default:
        throw new HostFsError(WRITE_OPCODES.has(opcode) ? E('EROFS') : E('ENOSYS'), `opcode ${opcode}`);
    }
  }

  private entry(nodeid: number, attr: FuseEntryOut['attr']): FuseEntryOut {
    return { nodeid, generation: 0, entryValid: this.timeout, attrValid: this.timeout, entryValidNsec: 0, attrValidNsec: 0, attr };
  }

  private init(bodyLen: number): number {
    const i = decodeInitIn(this.inDv, FUSE_IN_HEADER_SIZE, bodyLen);
    // Version negotiation (fuse.h): a newer major gets our major alone and waits for a
    // new INIT; an older one, or a minor we cannot speak, is refused.
    if (i.major < FUSE_KERNEL_VERSION || (i.major === FUSE_KERNEL_VERSION && i.minor < FUSE_MIN_MINOR_VERSION)) {
      throw new HostFsError(E('EPROTO'), `FUSE ${i.major}.${i.minor} is too old`);
    }
    const newerMajor = i.major > FUSE_KERNEL_VERSION;
    if (!newerMajor) {
      if (this.initialized) throw new HostFsError(E('EIO'), 'second INIT');
      this.initialized = true;
    }
    const flags = newerMajor ? 0 : i.flags & SUPPORTED_INIT_FLAGS;
    encodeInitOut(this.outDv, FUSE_OUT_HEADER_SIZE, {
      major: FUSE_KERNEL_VERSION,
      minor: FUSE_KERNEL_MINOR_VERSION,
      maxReadahead: i.maxReadahead,
      flags,
      maxBackground: 16,
      congestionThreshold: 12,
      maxWrite: 128 * 1024,
      timeGran: 1,
      maxPages: (flags & FUSE_MAX_PAGES) !== 0 ? DEVICE_MAX_PAGES : 0,
      mapAlignment: 0,
    });
    return i.minor < 23 ? FUSE_COMPAT_22_INIT_OUT_SIZE : FUSE_INIT_OUT_SIZE;
  }

  /** READ: file bytes go straight from the host file into the chain's writable buffers. */
  private read(chain: DescriptorChain, unique: number, bodyLen: number): number {
    const r = decodeReadIn(this.inDv, FUSE_IN_HEADER_SIZE, bodyLen);
    const fd = this.host.fileFd(r.fh);
    if (chain.writableLength < FUSE_OUT_HEADER_SIZE) return this.replyError(chain, unique, E('EINVAL'));
    const size = Math.min(r.size, chain.writableLength - FUSE_OUT_HEADER_SIZE, MAX_READ_BYTES);
    let skip = FUSE_OUT_HEADER_SIZE;
    let done = 0;
    const end = chain.readableCount + chain.writableCount;
    outer: for (let i = chain.readableCount; i < end && done < size; i++) {
      const segLen = chain.lengths[i]!;
      if (skip >= segLen) {
        skip -= segLen;
        continue;
      }
      const want = Math.min(segLen - skip, size - done);
      const bytes = chain.regions[i]!.bytes;
      const off = chain.offsets[i]! + skip;
      skip = 0;
      let got = 0;
      while (got < want) {
        const n = readSync(fd, bytes, off + got, want - got, r.offset + done + got);
        if (n === 0) {
          done += got;
          break outer; // end of file
        }
        got += n;
      }
      done += got;
    }
    encodeOutHeader(this.outDv, 0, FUSE_OUT_HEADER_SIZE + done, 0, unique);
    chain.write(0, this.outBuf, 0, FUSE_OUT_HEADER_SIZE);
    return FUSE_OUT_HEADER_SIZE + done;
  }

  /** READDIR / READDIRPLUS: entries from the OPENDIR snapshot; offset = entry index. */
  private readdir(chain: DescriptorChain, plus: boolean, bodyLen: number): number {
    const r = decodeReadIn(this.inDv, FUSE_IN_HEADER_SIZE, bodyLen);
    const { node, entries } = this.host.dirEntries(r.fh);
    const room = Math.min(r.size, chain.writableLength - FUSE_OUT_HEADER_SIZE, MAX_DIR_REPLY_BYTES);
    const u8 = this.outBuf;
    const dv = this.outDv;
    let pos = 0;
    for (let i = r.offset; i < entries.length; i++) {
      const e = entries[i]!;
      const at = FUSE_OUT_HEADER_SIZE + pos;
      let n: number;
      if (!plus) {
        n = encodeDirent(u8, dv, at, room - pos, e.ino, i + 1, e.type, e.name);
      } else {
        if (direntPlusSize(e.name.length) > room - pos) break; // check before the lookup counts
        const isDot = e.name.length <= 2 && e.name.every((c) => c === 0x2e);
        let entry: FuseEntryOut;
        if (isDot) {
          // '.' and '..' are not looked up: nodeid 0 tells the driver no count was taken.
          entry = this.entry(0, { ino: e.ino, size: 0, blocks: 0, atime: 0, mtime: 0, ctime: 0, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: e.type << 12, nlink: 0, uid: 0, gid: 0, rdev: 0, blksize: 0, flags: 0 });
        } else {
          try {
            const found = this.host.lookup(node.nodeid, utf8Decoder.decode(e.name));
            this.counters.lookupsGranted++;
            entry = this.entry(found.node.nodeid, found.attr);
          } catch {
            continue; // removed since OPENDIR
          }
        }
        n = encodeDirentPlus(u8, dv, at, room - pos, entry, i + 1, e.type, e.name);
      }
      if (n === 0) break;
      pos += n;
    }
    return pos;
  }
}
