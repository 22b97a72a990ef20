// The virtio-fs driver: FUSE over virtio (virtio 1.2, 5.11) from TypeScript, with an
// API shaped like node:fs/promises. It never knows which transport or memory it runs
// on: everything goes through VirtioTransport and its DMA arena.
//
// Start-up (3.1.1): reset, check device id 26, accept VERSION_1 (+ EVENT_IDX and the
// packed ring layout when offered), read the config (tag, num_request_queues), set up hiprio (0) and the first
// request queue (1), DRIVER_OK, then FUSE_INIT (fuse.h: version negotiation).
//
// Reads: a READ's data descriptor points at the caller's DMA buffer, so the device
// writes file bytes straight there (zero copy). A buffer outside DMA memory costs one
// copy, from a pool chunk. readFileDma() hands the DMA chunks themselves to the caller.
import { copyBytes } from '../../../kernel/memory/copy.js';
import { setupDriverQueue } from '../../../kernel/transport/queue-setup.js';
import type { VirtioTransport } from '../../../kernel/transport/virtio-transport.js';
import { VIRTIO_F_VERSION_1, featureBit, hasFeature } from '../../../kernel/virtqueue/layout.js';
import type { RingLayout, VirtqueueDriver } from '../../../kernel/virtqueue/queue.js';
import { type RingChoice, acceptRingFeatures } from '../../../kernel/virtqueue/ring.js';
import { errnoOf } from '../errno.js';
import {
  FuseCodecError,
  type FuseAttr,
  type FuseEntryOut,
  type FuseInitOut,
  decodeAttrOut,
  decodeDirents,
  decodeEntryOut,
  decodeInitOut,
  decodeOpenOut,
  decodeStatfsOut,
  encodeForgetIn,
  encodeGetattrIn,
  encodeInitIn,
  encodeName,
  encodeOpenIn,
  encodeReadIn,
  encodeReleaseIn,
  negotiateMinor,
  writeU64,
} from '../fuse-codec.js';
import {
  FUSE_ASYNC_READ,
  FUSE_ATTR_OUT_SIZE,
  FUSE_BATCH_FORGET_IN_SIZE,
  FUSE_FORGET_ONE_SIZE,
  FUSE_DEFAULT_MAX_PAGES_PER_REQ,
  FUSE_ENTRY_OUT_SIZE,
  FUSE_FORGET_IN_SIZE,
  FUSE_GETATTR_FH,
  FUSE_GETATTR_IN_SIZE,
  FUSE_INIT_IN_SIZE,
  FUSE_IN_HEADER_SIZE,
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MAX_PAGES,
  FUSE_MIN_MINOR_VERSION,
  FUSE_NAME_MAX,
  FUSE_OPEN_IN_SIZE,
  FUSE_OPEN_OUT_SIZE,
  FUSE_OUT_HEADER_SIZE,
  FUSE_PAGE_SIZE,
  FUSE_PARALLEL_DIROPS,
  FUSE_PATH_MAX,
  FUSE_RELEASE_IN_SIZE,
  FUSE_ROOT_ID,
  FUSE_STATFS_OUT_SIZE,
  FuseOpcode as Op,
  O_DIRECTORY,
  O_RDONLY,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
} from '../fuse-protocol.js';
import { VIRTIO_FS_HIPRIO_QUEUE, VIRTIO_FS_REQUEST_QUEUE, VIRTIO_ID_FS, decodeVirtioFsConfig } from '../virtio-fs-config.js';
import { ChunkPool } from './chunk-pool.js';
import { FsError, VirtioFsError } from './errors.js';
import { type FileHandleOwner, VirtioFsFileHandle } from './file-handle.js';
import { type FuseRequest, FuseChannel, REPLY_OFFSET, REPLY_ROOM } from './fuse-channel.js';
import { type CachedInode, InodeCache, newEntry } from './inode-cache.js';
import { FsDirent, FsStats, type FsStatFs, statFsFrom } from './stats.js';

export interface VirtioFsDriverOptions {
  /** Request queue size wanted (default 128; the device's maximum caps it). */
  queueSize?: number;
  /** hiprio queue size wanted (default 16). */
  hiprioQueueSize?: number;
  /** Negotiate VIRTIO_F_EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
  /** Ring layout: 'auto' (default) packed when the device offers it, else split; 'split' or 'packed' to force one ('packed' fails when not offered). */
  ring?: RingChoice;
  /** Lookup cache capacity in entries (default 1024). */
  cacheEntries?: number;
  /** Bytes per DMA pool chunk, and the largest READ (default 128 KiB). */
  chunkSize?: number;
  /** Chunks in the pool (default 32). */
  chunkCount?: number;
  /** READs in flight per readFile (default 4). */
  readAhead?: number;
}

export interface VirtioFsDriverStats {
  requests: number;
  /** Requests that waited for descriptors (queued beyond what the ring holds). */
  backlogged: number;
  maxBacklog: number;
  maxInFlight: number;
  /** Replies refused by the codec. */
  badReplies: number;
  notifications: number;
  zeroCopyReads: number;
  zeroCopyBytes: number;
  /** READs into non-DMA memory: each cost one copy from a pool chunk. */
  copiedReads: number;
  copiedBytes: number;
  lookups: number;
  cacheHits: number;
  cacheEvictions: number;
  /** Node ids forgotten (FORGET, or entries of BATCH_FORGET). */
  forgetsSent: number;
  /** FORGET and BATCH_FORGET requests sent. */
  forgetRequests: number;
  forgottenLookups: number;
}

/** A file's bytes in DMA memory, as readFileDma() returns them. */
export interface DmaFile {
  /** Consecutive pieces of the file, each inside the transport's DMA arena. */
  readonly chunks: Uint8Array[];
  readonly size: number;
  /** Gives the memory back; the chunks must not be used after. Idempotent. */
  release(): void;
}

export interface ReaddirOptions {
  withFileTypes?: boolean;
}

interface PendingLookup {
  promise: Promise<CachedInode>;
  waiters: number;
}

const E = (name: string): number => errnoOf(name)!;
const MAX_SYMLINKS = 40; // Linux MAXSYMLINKS
/** Forgets per BATCH_FORGET: what fits a request slot after the header. */
const MAX_BATCH_FORGET = Math.floor((REPLY_OFFSET - FUSE_IN_HEADER_SIZE - FUSE_BATCH_FORGET_IN_SIZE) / FUSE_FORGET_ONE_SIZE);
const isDir = (a: FuseAttr): boolean => (a.mode & S_IFMT) === S_IFDIR;
const isLink = (a: FuseAttr): boolean => (a.mode & S_IFMT) === S_IFLNK;
const utf8 = new TextDecoder();

/** Path components, with '.' dropped and '..' applied lexically (never above the root). */
function splitPath(path: string): string[] {
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') parts.pop();
    else parts.push(p);
  }
  return parts;
}

const SLASH = 0x2f;
const DOT = 0x2e;

/**
 * The cache key of `path`: '/' and its components (splitPath) joined by '/', or '' for
 * the root. For the usual absolute path (no '.', '..' or empty component, no trailing
 * '/'), the path itself.
 */
function pathKey(path: string): string {
  const n = path.length;
  const start = n > 0 && path.charCodeAt(0) === SLASH ? 1 : 0;
  const end = n > start && path.charCodeAt(n - 1) === SLASH ? n - 1 : n;
  let seg = start;
  for (let i = start; i <= end; i++) {
    if (i < end && path.charCodeAt(i) !== SLASH) continue;
    const len = i - seg;
    if (len === 0 ? end > start : len <= 2 && path.charCodeAt(seg) === DOT && (len === 1 || path.charCodeAt(seg + 1) === DOT)) {
      const parts = splitPath(path);
      return parts.length === 0 ? '' : '/' + parts.join('/');
    }
    seg = i + 1;
  }
  if (end === start) return '';
  if (start === 0) return '/' + path.slice(0, end);
  return end === n ? path : path.slice(0, end);
}

export class VirtioFsDriver implements FileHandleOwner {
  readonly tag: string;
  /** The FUSE minor version both sides speak (major is 7). */
  protocolMinor = 0;
  init: FuseInitOut | null = null;
  /** Largest READ, in bytes: min(chunk size, the device's max_pages). */
  maxRead = 0;
  private readonly hiprio: FuseChannel;
  private readonly requests: FuseChannel;
  private readonly chunks: ChunkPool;
  private readonly cache: InodeCache;
  private readonly root: CachedInode;
  private readonly handles = new Set<VirtioFsFileHandle>();
  private readonly inflightLookups = new Map<string, PendingLookup>();
  private readonly pendingForgets: number[] = []; // nodeid, nlookup pairs
  private forgetPump: Promise<void> = Promise.resolve();
  private forgetPumping = false;
  private unique = 0;
  private closing: Promise<void> | null = null;
  private readonly readAhead: number;
  private largeOutstanding = 0;
  private activeOps = 0;
  private opsIdle: Array<() => void> = [];
  private largeWaiters: Array<() => void> = [];
  private readonly counters = { zeroCopyReads: 0, zeroCopyBytes: 0, copiedReads: 0, copiedBytes: 0, lookups: 0, cacheHits: 0, forgetsSent: 0, forgetRequests: 0, forgottenLookups: 0 };

  private constructor(
    private readonly transport: VirtioTransport,
    tag: string,
    private readonly queues: VirtqueueDriver<FuseRequest>[],
    opts: VirtioFsDriverOptions,
  ) {
    this.tag = tag;
    const [hq, rq] = queues as [VirtqueueDriver<FuseRequest>, VirtqueueDriver<FuseRequest>];
    this.hiprio = new FuseChannel('virtio-fs hiprio', transport, hq, hq.size);
    this.requests = new FuseChannel('virtio-fs requests', transport, rq, rq.size);
    this.chunks = new ChunkPool(transport.dma, opts.chunkSize ?? 128 * 1024, opts.chunkCount ?? 32);
    this.cache = new InodeCache(opts.cacheEntries ?? 1024, (nodeid, n) => this.queueForget(nodeid, n));
    this.readAhead = Math.max(1, opts.readAhead ?? 4);
    const rootAttr = { ino: FUSE_ROOT_ID, size: 0, blocks: 0, atime: 0, mtime: 0, ctime: 0, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: S_IFDIR | 0o755, nlink: 2, uid: 0, gid: 0, rdev: 0, blksize: 4096, flags: 0 };
    this.root = newEntry('', FUSE_ROOT_ID, rootAttr);
    this.root.entryExpires = Infinity;
  }

  /** Brings up the device behind `transport` and negotiates FUSE. */
  static async start(transport: VirtioTransport, opts: VirtioFsDriverOptions = {}): Promise<VirtioFsDriver> {
    if (transport.deviceId !== VIRTIO_ID_FS) {
      throw new VirtioFsError('ERR_VIRTIO_FS_DEVICE_ID', `transport ${transport.kind} has device id ${transport.deviceId}, not ${VIRTIO_ID_FS} (file system)`);
    }
    transport.reset();
    const offered = transport.deviceFeatures();
    if (!hasFeature(offered, VIRTIO_F_VERSION_1)) throw new VirtioFsError('ERR_VIRTIO_FS_FEATURES', 'the device does not offer VIRTIO_F_VERSION_1');
    const features = featureBit(VIRTIO_F_VERSION_1) | acceptRingFeatures(offered, { eventIdx: opts.eventIdx, ring: opts.ring }, 'virtio-fs device');
    transport.negotiate(features);
    const cfg = decodeVirtioFsConfig(transport.readConfig(0, 40));
    if (cfg.numRequestQueues < 1) throw new VirtioFsError('ERR_VIRTIO_FS_CONFIG', `device ${cfg.tag} has ${cfg.numRequestQueues} request queues`);
    const queues: VirtqueueDriver<FuseRequest>[] = [];
    let driver: VirtioFsDriver | null = null;
    try {
      queues.push(setupDriverQueue<FuseRequest>(transport, VIRTIO_FS_HIPRIO_QUEUE, 'virtio-fs hiprio', opts.hiprioQueueSize ?? 16, features));
      queues.push(setupDriverQueue<FuseRequest>(transport, VIRTIO_FS_REQUEST_QUEUE, 'virtio-fs requests', opts.queueSize ?? 128, features));
      driver = new VirtioFsDriver(transport, cfg.tag, queues, opts);
      const d = driver;
      transport.onInterrupt(() => {
        d.hiprio.service();
        d.requests.service();
      });
      transport.driverOk();
      await d.fuseInit();
      return d;
    } catch (e) {
      transport.onInterrupt(() => {});
      transport.reset();
      driver?.freeMemory();
      if (!driver) for (const q of queues) freeQueue(transport, q);
      throw e;
    }
  }

  get stats(): VirtioFsDriverStats {
    const r = this.requests.stats;
    const h = this.hiprio.stats;
    return {
      requests: r.submitted + h.submitted,
      backlogged: r.backlogged + h.backlogged,
      maxBacklog: Math.max(r.maxBacklog, h.maxBacklog),
      maxInFlight: r.maxInFlight,
      badReplies: r.badReplies + h.badReplies,
      notifications: r.notifications + h.notifications,
      cacheEvictions: this.cache.evictions,
      ...this.counters,
    };
  }

  /** The ring layout negotiated (virtio 1.2, 2.7 split / 2.8 packed): diagnostics only. */
  get ringLayout(): RingLayout {
    return this.requests.queue.layout;
  }

  /** Request queue size (chains of >= 2 descriptors: at most half as many requests in flight). */
  get queueSize(): number {
    return this.requests.queue.size;
  }

  /** Entries in the lookup cache. */
  get cachedEntries(): number {
    return this.cache.size;
  }

  // ---- Requests

  private nextUnique(): number {
    this.unique = this.unique >= Number.MAX_SAFE_INTEGER ? 1 : this.unique + 1;
    return this.unique;
  }

  /** Runs one public operation; close() waits for those in progress. */
  private async track<T>(fn: () => Promise<T>): Promise<T> {
    this.checkOpen();
    this.activeOps++;
    try {
      return await fn();
    } finally {
      this.opDone();
    }
  }

  private opDone(): void {
    if (--this.activeOps === 0 && this.opsIdle.length > 0) {
      const w = this.opsIdle;
      this.opsIdle = [];
      for (const f of w) f();
    }
  }

  private checkOpen(): void {
    if (this.closing) throw new VirtioFsError('ERR_VIRTIO_FS_CLOSED', `virtio-fs ${this.tag} is closed`);
  }

  /** Submits `r` on the request queue; returns the body length or -errno. */
  private async send(r: FuseRequest): Promise<number> {
    return this.requests.submit(r);
  }

  /** Runs a body decoder, attributing codec faults to the request. */
  private decode<T>(r: FuseRequest, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      if (e instanceof FuseCodecError && e.opcode < 0) {
        this.requests.stats.badReplies++;
        throw e.forRequest(r.opcode, r.unique);
      }
      throw e;
    }
  }

  private async fuseInit(): Promise<void> {
    const r = await this.requests.acquire();
    try {
      r.begin(Op.INIT, this.nextUnique(), 0);
      encodeInitIn(r.dv, FUSE_IN_HEADER_SIZE, {
        major: FUSE_KERNEL_VERSION,
        minor: FUSE_KERNEL_MINOR_VERSION,
        maxReadahead: this.chunks.chunkSize,
        flags: FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS,
      });
      r.setArgs(FUSE_INIT_IN_SIZE, REPLY_ROOM - FUSE_OUT_HEADER_SIZE);
      const n = await this.send(r);
      if (n < 0) throw new VirtioFsError('ERR_VIRTIO_FS_INIT', `FUSE_INIT failed: ${new FsError(-n, 'init').message}`);
      const init = this.decode(r, () => decodeInitOut(r.dv, REPLY_OFFSET + FUSE_OUT_HEADER_SIZE, n));
      try {
        this.protocolMinor = negotiateMinor(init, FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION, FUSE_MIN_MINOR_VERSION);
      } catch (e) {
        throw new VirtioFsError('ERR_VIRTIO_FS_INIT', (e as Error).message, { cause: e });
      }
      this.init = init;
      const pages = (init.flags & FUSE_MAX_PAGES) !== 0 && init.maxPages > 0 ? init.maxPages : FUSE_DEFAULT_MAX_PAGES_PER_REQ;
      this.maxRead = Math.min(this.chunks.chunkSize, pages * FUSE_PAGE_SIZE);
    } finally {
      this.requests.release(r);
    }
  }

  /** LOOKUP name in parent: the entry, or -errno. */
  private async lookupRaw(parent: number, name: string): Promise<FuseEntryOut | number> {
    const r = await this.requests.acquire();
    try {
      r.begin(Op.LOOKUP, this.nextUnique(), parent);
      const n = encodeName(r.bytes, FUSE_IN_HEADER_SIZE, REPLY_OFFSET - FUSE_IN_HEADER_SIZE, name);
      r.setArgs(n, FUSE_ENTRY_OUT_SIZE);
      this.counters.lookups++;
      const len = await this.send(r);
      if (len < 0) return len;
      return this.decode(r, () => decodeEntryOut(r.dv, REPLY_OFFSET + FUSE_OUT_HEADER_SIZE, len));
    } finally {
      this.requests.release(r);
    }
  }

  /** GETATTR of `nodeid`, whose type (mode & S_IFMT) is `type`: a reply changing it is refused. */
  private async getattrRaw(nodeid: number, fh: number, type: number): Promise<{ attr: FuseAttr; valid: number; nsec: number } | number> {
    const r = await this.requests.acquire();
    try {
      r.begin(Op.GETATTR, this.nextUnique(), nodeid);
      encodeGetattrIn(r.dv, FUSE_IN_HEADER_SIZE, fh >= 0 ? FUSE_GETATTR_FH : 0, fh >= 0 ? fh : 0);
      r.setArgs(FUSE_GETATTR_IN_SIZE, FUSE_ATTR_OUT_SIZE);
      const len = await this.send(r);
      if (len < 0) return len;
      const a = this.decode(r, () => {
        const out = decodeAttrOut(r.dv, REPLY_OFFSET + FUSE_OUT_HEADER_SIZE, len);
        // A node's type never changes (Linux's FUSE then marks the inode bad): cached, such
        // a reply turned the root into a file for every later path (found by fuzz/targets/fuse-reply.ts).
        if ((out.attr.mode & S_IFMT) !== type) throw new FuseCodecError('ERR_FUSE_FIELD', `fuse_attr.mode 0o${out.attr.mode.toString(8)} changes the type of node ${nodeid} (was 0o${type.toString(8)})`);
        return out;
      });
      return { attr: a.attr, valid: a.attrValid, nsec: a.attrValidNsec };
    } finally {
      this.requests.release(r);
    }
  }

  /** OPEN or OPENDIR: the fh, or -errno. */
  private async openRaw(opcode: number, nodeid: number, flags: number): Promise<number> {
    const r = await this.requests.acquire();
    try {
      r.begin(opcode, this.nextUnique(), nodeid);
      encodeOpenIn(r.dv, FUSE_IN_HEADER_SIZE, flags);
      r.setArgs(FUSE_OPEN_IN_SIZE, FUSE_OPEN_OUT_SIZE);
      const len = await this.send(r);
      if (len < 0) return len;
      return this.decode(r, () => decodeOpenOut(r.dv, REPLY_OFFSET + FUSE_OUT_HEADER_SIZE, len)).fh;
    } finally {
      this.requests.release(r);
    }
  }

  /** RELEASE or RELEASEDIR: 0 or -errno. */
  private async releaseRaw(opcode: number, nodeid: number, fh: number, flags: number): Promise<number> {
    const r = await this.requests.acquire();
    try {
      r.begin(opcode, this.nextUnique(), nodeid);
      encodeReleaseIn(r.dv, FUSE_IN_HEADER_SIZE, fh, flags);
      r.setArgs(FUSE_RELEASE_IN_SIZE, 0);
      const len = await this.send(r);
      if (len > 0) throw new FuseCodecError('ERR_FUSE_LENGTH', `reply carries ${len} bytes of body, expected none`, opcode, r.unique);
      return len;
    } finally {
      this.requests.release(r);
    }
  }

  /**
   * One READ / READDIR / READLINK whose data lands in target[offset, offset+length)
   * (which must be DMA memory). Returns the data bytes or -errno.
   */
  private async dataRequest(opcode: number, nodeid: number, fh: number, filePos: number, target: Uint8Array, offset: number, length: number): Promise<number> {
    const r = await this.requests.acquire();
    try {
      r.begin(opcode, this.nextUnique(), nodeid);
      const covered = r.setDmaData(this.transport.dma, target, offset, length, this.requests.maxDataSegments);
      let argLen = 0;
      if (opcode !== Op.READLINK) argLen = encodeReadIn(r.dv, FUSE_IN_HEADER_SIZE, fh, filePos, covered);
      r.setArgs(argLen, 0);
      const len = await this.send(r);
      return len; // the ring already checked len <= the writable bytes
    } finally {
      this.requests.release(r);
    }
  }

  // ---- FORGET (hiprio queue, no reply)

  private queueForget(nodeid: number, nlookup: number): void {
    if (nlookup <= 0 || nodeid === FUSE_ROOT_ID) return;
    this.pendingForgets.push(nodeid, nlookup);
    if (!this.forgetPumping) {
      this.forgetPumping = true;
      this.forgetPump = this.pumpForgets();
    }
  }

  /**
   * Sends queued forgets on the hiprio queue (virtio 1.2, 5.11.6.1): one FORGET for a
   * lone entry, BATCH_FORGET (fuse.h 7.16) for several, as many as fit a request slot.
   */
  private async pumpForgets(): Promise<void> {
    await Promise.resolve(); // gather this turn's evictions
    while (this.pendingForgets.length > 0) {
      const acquired = this.hiprio.acquire();
      const r = acquired instanceof Promise ? await acquired : acquired;
      const n = Math.min(this.pendingForgets.length >> 1, MAX_BATCH_FORGET);
      if (n === 1) {
        const nodeid = this.pendingForgets[0]!;
        const nlookup = this.pendingForgets[1]!;
        r.begin(Op.FORGET, this.nextUnique(), nodeid);
        encodeForgetIn(r.dv, FUSE_IN_HEADER_SIZE, nlookup);
        r.setArgs(FUSE_FORGET_IN_SIZE, -1);
        this.counters.forgottenLookups += nlookup;
      } else {
        r.begin(Op.BATCH_FORGET, this.nextUnique(), 0);
        r.dv.setUint32(FUSE_IN_HEADER_SIZE, n, true);
        r.dv.setUint32(FUSE_IN_HEADER_SIZE + 4, 0, true);
        for (let i = 0; i < n; i++) {
          const o = FUSE_IN_HEADER_SIZE + FUSE_BATCH_FORGET_IN_SIZE + i * FUSE_FORGET_ONE_SIZE;
          writeU64(r.dv, o, this.pendingForgets[2 * i]!);
          writeU64(r.dv, o + 8, this.pendingForgets[2 * i + 1]!);
          this.counters.forgottenLookups += this.pendingForgets[2 * i + 1]!;
        }
        r.setArgs(FUSE_BATCH_FORGET_IN_SIZE + n * FUSE_FORGET_ONE_SIZE, -1);
      }
      this.pendingForgets.splice(0, 2 * n);
      this.counters.forgetsSent += n;
      this.counters.forgetRequests++;
      const release = (): void => this.hiprio.release(r);
      this.hiprio.submit(r).then(release, release);
    }
    this.forgetPumping = false; // in the same step as the last check: no forget is left behind
  }

  // ---- Path resolution

  private fsError(errno: number, syscall: string, path: string): FsError {
    return new FsError(errno, syscall, path);
  }

  /** The cache entry for `key` (a normalized path), from LOOKUP when absent or expired. Pinned. */
  private async lookupPinned(parent: CachedInode, key: string, name: string, syscall: string, path: string): Promise<CachedInode> {
    const now = performance.now();
    const c = this.cache.get(key);
    if (c !== undefined && now < c.entryExpires) {
      this.counters.cacheHits++;
      return this.cache.pin(c);
    }
    // Concurrent lookups of one path share one LOOKUP; the entry comes back pinned once
    // per waiter, in the same step that caches it (an unpinned entry could be evicted,
    // and forgotten on the device, before a waiter used its node id).
    let w = this.inflightLookups.get(key);
    if (w === undefined) {
      const pending: PendingLookup = { promise: null as unknown as Promise<CachedInode>, waiters: 0 };
      pending.promise = (async () => {
        try {
          if (Buffer.byteLength(name) > FUSE_NAME_MAX) throw this.fsError(E('ENAMETOOLONG'), syscall, path);
          const e = await this.lookupRaw(parent.nodeid, name);
          if (typeof e === 'number') throw this.fsError(-e, syscall, path);
          if (e.nodeid === 0) throw this.fsError(E('ENOENT'), syscall, path); // negative entry
          return this.cache.addLookup(key, e, performance.now(), pending.waiters);
        } finally {
          this.inflightLookups.delete(key);
        }
      })();
      w = pending;
      this.inflightLookups.set(key, w);
    }
    w.waiters++;
    return w.promise;
  }

  /**
   * Walks `path` from the root, following symbolic links in directories (and in the
   * last component when `followLast`). Returns the entry, pinned: unpin when done.
   */
  private async resolve(path: string, syscall: string, followLast: boolean): Promise<CachedInode> {
    this.checkOpen();
    let parts = splitPath(path);
    let links = 0;
    let cur = this.cache.pin(this.root);
    let curKey = '';
    let i = 0;
    try {
      while (i < parts.length) {
        if (!isDir(cur.attr)) throw this.fsError(E('ENOTDIR'), syscall, path);
        const name = parts[i]!;
        const key = `${curKey}/${name}`; // as pathKey() spells it
        const child = await this.lookupPinned(cur, key, name, syscall, path);
        const last = i === parts.length - 1;
        if (isLink(child.attr) && (!last || followLast)) {
          try {
            if (++links > MAX_SYMLINKS) throw this.fsError(E('ELOOP'), syscall, path);
            const target = await this.linkTarget(child, syscall, path);
            const base = target.startsWith('/') ? '' : curKey;
            parts = splitPath(`${base}/${target}/${parts.slice(i + 1).join('/')}`);
          } finally {
            this.cache.unpin(child);
          }
          this.cache.unpin(cur);
          cur = this.cache.pin(this.root);
          curKey = '';
          i = 0;
          continue;
        }
        this.cache.unpin(cur);
        cur = child;
        curKey = key;
        i++;
      }
      return cur;
    } catch (e) {
      this.cache.unpin(cur);
      throw e;
    }
  }

  /**
   * resolve() and freshAttr() without requests: the entry when every step is answered
   * by the cache, else null (a miss, an expired entry or attributes, a link to follow, a
   * non-directory used as one: resolve() handles those). Nothing is pinned: nothing can
   * be evicted before the caller, in the same step, is done with the entry.
   */
  private cachedEntry(path: string, followLast: boolean): CachedInode | null {
    if (this.closing !== null) return null;
    const key = pathKey(path);
    const now = performance.now();
    let cur = this.root;
    let hits = 0;
    for (let from = 1; from < key.length; ) {
      if (!isDir(cur.attr)) return null;
      let end = key.indexOf('/', from);
      if (end < 0) end = key.length;
      const c = this.cache.peek(end === key.length ? key : key.slice(0, end));
      if (c === undefined || !(now < c.entryExpires)) return null;
      // A link to follow: resolve()'s job. (One in a directory component also fails isDir() next turn.)
      if (followLast && isLink(c.attr)) return null;
      // Marked used as resolve() would; on a later miss resolve() marks them again in
      // the same order, so the LRU order ends up as without this walk.
      this.cache.touch(c);
      hits++;
      cur = c;
      from = end + 1;
    }
    if (!(now < cur.attrExpires)) return null;
    this.counters.cacheHits += hits; // only on success: after a miss resolve() counts them
    return cur;
  }

  /** The entry's FsStats for `attr`: built once per attributes object, then shared (frozen). */
  private statsOf(c: CachedInode, attr: FuseAttr): FsStats {
    if (c.statsAttr === attr) return c.stats!;
    const s = Object.freeze(new FsStats(attr));
    if (c.attr === attr) {
      c.stats = s;
      c.statsAttr = attr;
    }
    return s;
  }

  private async linkTarget(c: CachedInode, syscall: string, path: string): Promise<string> {
    if (c.linkTarget !== undefined) return c.linkTarget;
    const [slot] = await this.chunks.acquire(1);
    try {
      const chunk = this.chunks.view(slot!);
      const n = await this.dataRequest(Op.READLINK, c.nodeid, 0, 0, chunk, 0, Math.min(chunk.length, FUSE_PATH_MAX));
      if (n < 0) throw this.fsError(-n, syscall, path);
      c.linkTarget = utf8.decode(chunk.subarray(0, n));
      return c.linkTarget;
    } finally {
      this.chunks.release(slot!);
    }
  }

  /** Current attributes of a pinned entry (GETATTR when they expired). */
  private async freshAttr(c: CachedInode, fh: number, syscall: string, path: string): Promise<FuseAttr> {
    const now = performance.now();
    if (now < c.attrExpires) return c.attr;
    const a = await this.getattrRaw(c.nodeid, fh, c.attr.mode & S_IFMT);
    if (typeof a === 'number') throw this.fsError(-a, syscall, path);
    if (c === this.root) {
      c.attr = a.attr;
      c.attrExpires = performance.now() + a.valid * 1000 + a.nsec / 1e6;
    } else {
      this.cache.setAttr(c, a.attr, a.valid, a.nsec, performance.now());
    }
    return a.attr;
  }

  // ---- node:fs/promises-like API

  async stat(path: string): Promise<FsStats> {
    const cached = this.statCached(path);
    if (cached !== null) return cached;
    return this.track(async () => {
      const c = await this.resolve(path, 'stat', true);
      try {
        return this.statsOf(c, await this.freshAttr(c, -1, 'stat', path));
      } finally {
        this.cache.unpin(c);
      }
    });
  }

  async lstat(path: string): Promise<FsStats> {
    const cached = this.lstatCached(path);
    if (cached !== null) return cached;
    return this.track(async () => {
      const c = await this.resolve(path, 'lstat', false);
      try {
        return this.statsOf(c, await this.freshAttr(c, -1, 'lstat', path));
      } finally {
        this.cache.unpin(c);
      }
    });
  }

  /**
   * What lstat(path) would return, when the cache alone answers it (every component's
   * entry and the last one's attributes still valid, no symbolic link in a directory
   * component); else null, and lstat() does the rest (requests, errors).
   */
  lstatCached(path: string): FsStats | null {
    const c = this.cachedEntry(path, false);
    return c === null ? null : this.statsOf(c, c.attr);
  }

  /** stat(path) from the cache alone, as lstatCached (a symbolic link anywhere: null). */
  statCached(path: string): FsStats | null {
    const c = this.cachedEntry(path, true);
    return c === null ? null : this.statsOf(c, c.attr);
  }

  async readlink(path: string): Promise<string> {
    return this.track(async () => {
      const c = await this.resolve(path, 'readlink', false);
      try {
        if (!isLink(c.attr)) throw this.fsError(E('EINVAL'), 'readlink', path);
        return await this.linkTarget(c, 'readlink', path);
      } finally {
        this.cache.unpin(c);
      }
    });
  }

  async statfs(_path = '/'): Promise<FsStatFs> {
    return this.track(async () => {
      this.checkOpen();
      const r = await this.requests.acquire();
      try {
        r.begin(Op.STATFS, this.nextUnique(), FUSE_ROOT_ID);
        r.setArgs(0, FUSE_STATFS_OUT_SIZE);
        const len = await this.send(r);
        if (len < 0) throw this.fsError(-len, 'statfs', _path);
        return statFsFrom(this.decode(r, () => decodeStatfsOut(r.dv, REPLY_OFFSET + FUSE_OUT_HEADER_SIZE, len)));
      } finally {
        this.requests.release(r);
      }
    });
  }

  readdir(path: string, options: ReaddirOptions & { withFileTypes: true }): Promise<FsDirent[]>;
  readdir(path: string, options?: ReaddirOptions): Promise<string[]>;
  async readdir(path: string, options: ReaddirOptions = {}): Promise<string[] | FsDirent[]> {
    return this.track(async () => {
      const c = await this.resolve(path, 'scandir', true);
      try {
        if (!isDir(c.attr)) throw this.fsError(E('ENOTDIR'), 'scandir', path);
        const fh = await this.openRaw(Op.OPENDIR, c.nodeid, O_RDONLY | O_DIRECTORY);
        if (fh < 0) throw this.fsError(-fh, 'scandir', path);
        const names: string[] = [];
        const dirents: FsDirent[] = [];
        const [slot] = await this.chunks.acquire(1);
        try {
          const chunk = this.chunks.view(slot!);
          const dv = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
          let offset = 0;
          for (;;) {
            const n = await this.dataRequest(Op.READDIR, c.nodeid, fh, offset, chunk, 0, chunk.length);
            if (n < 0) throw this.fsError(-n, 'scandir', path);
            if (n === 0) break;
            const entries = decodeDirents(chunk, dv, 0, n);
            const next = entries[entries.length - 1]!.off;
            if (next === offset) throw new FuseCodecError('ERR_FUSE_FIELD', `READDIR at offset ${offset} made no progress`, Op.READDIR, -1);
            offset = next;
            for (const d of entries) {
              if (d.name === '.' || d.name === '..') continue;
              if (options.withFileTypes) dirents.push(new FsDirent(d.name, path, d.type));
              else names.push(d.name);
            }
          }
        } finally {
          this.chunks.release(slot!);
          await this.releaseRaw(Op.RELEASEDIR, c.nodeid, fh, 0);
        }
        return options.withFileTypes ? dirents : names;
      } finally {
        this.cache.unpin(c);
      }
    });
  }

  /** Opens a file for reading (flags other than 'r' are refused: the driver is read-only). */
  async open(path: string, flags: string | number = 'r'): Promise<VirtioFsFileHandle> {
    return this.track(async () => {
      if (flags !== 'r' && flags !== O_RDONLY) throw this.fsError(E('EROFS'), 'open', path);
      const c = await this.resolve(path, 'open', true);
      try {
        if (isDir(c.attr)) throw this.fsError(E('EISDIR'), 'open', path);
        const fh = await this.openRaw(Op.OPEN, c.nodeid, O_RDONLY);
        if (fh < 0) throw this.fsError(-fh, 'open', path);
        const h = new VirtioFsFileHandle(this, fh, c, path);
        this.handles.add(h);
        return h; // c stays pinned until the handle closes
      } catch (e) {
        this.cache.unpin(c);
        throw e;
      }
    });
  }

  /** The whole file as a Buffer (one copy per chunk, from DMA pool chunks), or a string. */
  readFile(path: string, options?: { encoding?: null }): Promise<Buffer>;
  readFile(path: string, options: { encoding: BufferEncoding } | BufferEncoding): Promise<string>;
  async readFile(path: string, options?: { encoding?: BufferEncoding | null } | BufferEncoding): Promise<Buffer | string> {
    return this.track(async () => {
      const encoding = typeof options === 'string' ? options : options?.encoding;
      const h = await this.open(path);
      try {
        const size = (await this.freshAttr(h.inode, h.fh, 'read', path)).size;
        let buf: Buffer;
        if (size > 0) {
          try {
            buf = Buffer.allocUnsafe(size);
          } catch (e) {
            // fuse_attr.size is any u64 the device says: a size no Buffer can hold is a
            // file too large to read whole (found by fuzz/targets/fuse-reply.ts).
            if ((e as NodeJS.ErrnoException).code === 'ERR_OUT_OF_RANGE') throw new FsError(errnoOf('EFBIG')!, 'read', path);
            throw e;
          }
          const n = await this.readRange(h, buf, size);
          if (n < size) buf = buf.subarray(0, n);
        } else {
          buf = await this.readUntilEof(h);
        }
        return encoding ? buf.toString(encoding) : buf;
      } finally {
        await h.close();
      }
    });
  }

  /**
   * The whole file in DMA memory, without copying: the device writes the file's bytes
   * into DMA chunks, which are handed over as they are (e.g. to vsock transmit). Call
   * release() when done with them.
   */
  async readFileDma(path: string): Promise<DmaFile> {
    return this.track(async () => {
      const h = await this.open(path);
      let release: () => void = () => {};
      try {
        const size = (await this.freshAttr(h.inode, h.fh, 'read', path)).size;
        // A file larger than all of DMA memory can never be read into it (the size is any
        // u64 the device says; found by fuzz/targets/fuse-reply.ts).
        if (size > this.transport.dma.size) throw new FsError(errnoOf('EFBIG')!, 'read', path);
        const piece = this.maxRead;
        const count = Math.max(1, Math.ceil(size / piece));
        let chunks: Uint8Array[];
        let total = 0;
        if (count <= this.chunks.count >> 1) {
          // Small files: pool chunks, taken all at once (no deadlock between callers).
          const slots = await this.chunks.acquire(count);
          let released = false;
          release = () => {
            if (released) return;
            released = true;
            for (const s of slots) this.chunks.release(s);
          };
          const views = slots.map((s) => this.chunks.view(s));
          const got = await this.parallelPieces(count, async (i) => this.readAt(h, views[i]!, 0, Math.min(piece, size - i * piece), i * piece));
          chunks = [];
          for (let i = 0; i < count; i++) {
            if (got[i]! > 0) chunks.push(views[i]!.subarray(0, got[i]!));
            total += got[i]!;
            if (got[i]! < Math.min(piece, size - i * piece)) break;
          }
        } else {
          // Large files: one arena allocation, split into READ-sized pieces.
          const mem = await this.allocateLarge(size);
          let released = false;
          release = () => {
            if (released) return;
            released = true;
            this.transport.dma.free(mem);
            this.largeOutstanding--;
            const w = this.largeWaiters;
            this.largeWaiters = [];
            for (const f of w) f();
          };
          const got = await this.parallelPieces(count, async (i) => this.readAt(h, mem, i * piece, Math.min(piece, size - i * piece), i * piece));
          chunks = [];
          for (let i = 0; i < count; i++) {
            if (got[i]! > 0) chunks.push(mem.subarray(i * piece, i * piece + got[i]!));
            total += got[i]!;
            if (got[i]! < Math.min(piece, size - i * piece)) break;
          }
        }
        return { chunks, size: total, release };
      } catch (e) {
        release();
        throw e;
      } finally {
        await h.close();
      }
    });
  }

  /**
   * DMA memory for a large readFileDma. When the arena is full while other large files
   * of ours are held, waits for one of them to be released and tries again; with none
   * held, the arena is simply too small and ERR_DMA_EXHAUSTED is thrown.
   */
  private async allocateLarge(size: number): Promise<Uint8Array> {
    for (;;) {
      try {
        const mem = this.transport.dma.allocate(size, FUSE_PAGE_SIZE);
        this.largeOutstanding++;
        return mem;
      } catch (e) {
        if ((e as { code?: string }).code !== 'ERR_DMA_EXHAUSTED' || this.largeOutstanding === 0) throw e;
        await new Promise<void>((resolve) => this.largeWaiters.push(resolve));
      }
    }
  }

  /** Reads [0, size) of `h` into `buf` with readAhead READs in flight; returns the bytes up to the first short read. */
  private async readRange(h: VirtioFsFileHandle, buf: Uint8Array, size: number): Promise<number> {
    const piece = this.maxRead;
    const count = Math.ceil(size / piece);
    const got = await this.parallelPieces(count, (i) => this.readAt(h, buf, i * piece, Math.min(piece, size - i * piece), i * piece));
    let total = 0;
    for (let i = 0; i < count; i++) {
      total += got[i]!;
      if (got[i]! < Math.min(piece, size - i * piece)) break;
    }
    return total;
  }

  private async parallelPieces(count: number, readPiece: (i: number) => Promise<number>): Promise<number[]> {
    const got = new Array<number>(count).fill(0);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < count) {
        const i = next++;
        got[i] = await readPiece(i);
      }
    };
    const workers: Promise<void>[] = [];
    for (let w = 0; w < Math.min(this.readAhead, count); w++) workers.push(worker());
    await Promise.all(workers);
    return got;
  }

  private async readUntilEof(h: VirtioFsFileHandle): Promise<Buffer> {
    const parts: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const part = Buffer.allocUnsafe(this.maxRead);
      const n = await this.readAt(h, part, 0, part.length, pos);
      if (n === 0) break;
      parts.push(part.subarray(0, n));
      pos += n;
    }
    return Buffer.concat(parts, pos);
  }

  // ---- FileHandleOwner

  /** One READ into target[offset, offset+length) at file position `position`. */
  async readAt(h: VirtioFsFileHandle, target: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    // The hot path: tracked inline, without the closure track() would allocate.
    this.checkOpen();
    this.activeOps++;
    try {
      const len = Math.min(length, this.maxRead);
      if (len === 0) return 0;
      if (this.transport.dma.addressOf(target) >= 0) {
        // Zero copy. A buffer crossing more DMA pages than a chain may carry takes several
        // READs; a short one means end of file.
        let done = 0;
        while (done < len) {
          const r = await this.requests.acquire();
          let n: number;
          let covered: number;
          try {
            r.begin(Op.READ, this.nextUnique(), h.nodeid);
            covered = r.setDmaData(this.transport.dma, target, offset + done, len - done, this.requests.maxDataSegments);
            r.setArgs(encodeReadIn(r.dv, FUSE_IN_HEADER_SIZE, h.fh, position + done, covered), 0);
            n = await this.send(r);
          } finally {
            this.requests.release(r);
          }
          if (n < 0) throw this.fsError(-n, 'read', h.path);
          this.counters.zeroCopyReads++;
          this.counters.zeroCopyBytes += n;
          done += n;
          if (n < covered) break;
        }
        return done;
      }
      let slot = this.chunks.tryAcquire();
      if (slot < 0) slot = (await this.chunks.acquire(1))[0]!;
      try {
        const chunk = this.chunks.view(slot);
        const n = await this.dataRequest(Op.READ, h.nodeid, h.fh, position, chunk, 0, len);
        if (n < 0) throw this.fsError(-n, 'read', h.path);
        copyBytes(chunk, 0, target, offset, n); // the one copy of a non-DMA read
        this.counters.copiedReads++;
        this.counters.copiedBytes += n;
        return n;
      } finally {
        this.chunks.release(slot);
      }
    } finally {
      this.opDone();
    }
  }

  async statHandle(h: VirtioFsFileHandle): Promise<FsStats> {
    return this.track(async () => {
      return this.statsOf(h.inode, await this.freshAttr(h.inode, h.fh, 'fstat', h.path));
    });
  }

  async releaseHandle(h: VirtioFsFileHandle): Promise<void> {
    try {
      const n = await this.releaseRaw(Op.RELEASE, h.nodeid, h.fh, O_RDONLY);
      if (n < 0) throw this.fsError(-n, 'close', h.path);
    } finally {
      this.handles.delete(h);
      this.cache.unpin(h.inode);
    }
  }

  // ---- Shutdown

  /**
   * Closes open handles (RELEASE), forgets every cached entry (FORGET), waits for the
   * device to take it all, resets the device and frees the driver's DMA memory. The
   * transport itself stays open (its owner closes it).
   */
  close(): Promise<void> {
    if (this.closing === null) this.closing = this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.handles].map((h) => h.close()));
    while (this.activeOps > 0) await new Promise<void>((resolve) => this.opsIdle.push(resolve));
    await this.requests.whenIdle();
    this.cache.clear();
    while (this.forgetPumping) await this.forgetPump;
    await this.hiprio.whenIdle();
    this.transport.onInterrupt(() => {});
    this.transport.reset();
    this.freeMemory();
  }

  private freeMemory(): void {
    this.hiprio.destroy();
    this.requests.destroy();
    this.chunks.destroy();
    for (const q of this.queues) freeQueue(this.transport, q);
  }
}

function freeQueue(t: VirtioTransport, q: VirtqueueDriver<FuseRequest>): void {
  t.dma.free(q.desc.bytes);
  t.dma.free(q.avail.bytes);
  t.dma.free(q.used.bytes);
}

