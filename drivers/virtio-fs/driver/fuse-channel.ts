// One virtqueue carrying FUSE requests (virtio 1.2, 5.11.6.1): each request is a chain
//   [fuse_in_header + args]            device-readable, in the request's slot
//   [fuse_out_header + fixed reply]    device-writable, in the same slot
//   [data...]                          device-writable: READ / READDIR / READLINK bytes,
//                                      straight into the caller's DMA buffer or a pool chunk
// FORGET chains have the readable part only (no reply).
//
// Requests are pooled records, one per DMA slot, reused without allocation. Requests
// beyond what the ring holds wait in a FIFO backlog and go out as descriptors free up:
// never failed for lack of descriptors. Adds are batched: avail.idx is published, and
// the device notified, once per microtask turn.
import type { DmaArena } from '../../../kernel/memory/dma.js';
import { BufferPool } from '../../../kernel/memory/dma.js';
import type { VirtioTransport } from '../../../kernel/transport/virtio-transport.js';
import type { VirtqueueDriver } from '../../../kernel/virtqueue/driver-queue.js';
import { type FuseOutHeader, decodeOutHeader, writeInHeader } from '../fuse-codec.js';
import { FUSE_IN_HEADER_SIZE, FUSE_OUT_HEADER_SIZE } from '../fuse-protocol.js';
import { VirtioFsError } from './errors.js';

export const SLOT_SIZE = 1024;
/** Request bytes live in [0, REPLY_OFFSET) of a slot, the fixed reply after. */
export const REPLY_OFFSET = 512;
export const REPLY_ROOM = SLOT_SIZE - REPLY_OFFSET;
/** Descriptors a request's data part may use (a buffer crossing DMA pages needs several). */
export const MAX_DATA_SEGMENTS = 16;

export class FuseRequest {
  opcode = 0;
  unique = 0;
  /** Readable bytes at the start of the slot. */
  reqLen = 0;
  /** Writable bytes at REPLY_OFFSET (out header + fixed reply); 0 = no reply (FORGET). */
  replyLen = 0;
  readonly dataAddrs = new Float64Array(MAX_DATA_SEGMENTS);
  readonly dataLens = new Uint32Array(MAX_DATA_SEGMENTS);
  dataCount = 0;
  dataLen = 0;
  /** Resolved with the reply body length (>= 0) or -errno; rejected on protocol faults. */
  resolve: (r: number) => void = noop;
  reject: (e: unknown) => void = noop;
  readonly dv: DataView;

  constructor(
    readonly slot: number,
    readonly bytes: Uint8Array,
    readonly addr: number,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Starts a request: writes the in header (its len is patched by setArgs). */
  begin(opcode: number, unique: number, nodeid: number): void {
    this.opcode = opcode;
    this.unique = unique;
    this.dataCount = 0;
    this.dataLen = 0;
    writeInHeader(this.dv, 0, FUSE_IN_HEADER_SIZE, opcode, unique, nodeid);
  }

  /** Sets the argument length (args written at FUSE_IN_HEADER_SIZE) and reply room. */
  setArgs(argLen: number, replyBodyLen: number): void {
    this.reqLen = FUSE_IN_HEADER_SIZE + argLen;
    this.dv.setUint32(0, this.reqLen, true);
    this.replyLen = replyBodyLen < 0 ? 0 : FUSE_OUT_HEADER_SIZE + replyBodyLen;
  }

  /**
   * Points the data part at `length` bytes of `target` (which must lie in `arena`),
   * split where the arena's device addresses are not contiguous. Returns the bytes
   * covered (less than asked when more than MAX_DATA_SEGMENTS pieces would be needed).
   */
  setDmaData(arena: DmaArena, target: Uint8Array, offset: number, length: number, maxSegments: number): number {
    let off = target.byteOffset + offset;
    let left = length;
    let n = 0;
    const page = arena.pageSize;
    const limit = Math.min(maxSegments, MAX_DATA_SEGMENTS);
    while (left > 0 && n < limit) {
      const piece = Math.min(left, page - (off % page));
      this.dataAddrs[n] = arena.addrOfOffset(off);
      this.dataLens[n] = piece;
      n++;
      off += piece;
      left -= piece;
    }
    this.dataCount = n;
    this.dataLen = length - left;
    return this.dataLen;
  }

  get descriptorsNeeded(): number {
    return 1 + (this.replyLen > 0 ? 1 : 0) + this.dataCount;
  }
}

function noop(): void {}

export interface ChannelStats {
  submitted: number;
  completed: number;
  /** Requests that had to wait for free descriptors. */
  backlogged: number;
  maxBacklog: number;
  inFlight: number;
  maxInFlight: number;
  /** Replies refused by the codec (wrong length, unknown unique, bad errno...). */
  badReplies: number;
  notifications: number;
}

export class FuseChannel {
  readonly stats: ChannelStats = { submitted: 0, completed: 0, backlogged: 0, maxBacklog: 0, inFlight: 0, maxInFlight: 0, badReplies: 0, notifications: 0 };
  private readonly slots: BufferPool;
  private readonly records: FuseRequest[] = [];
  private readonly recordWaiters: Array<(r: FuseRequest) => void> = [];
  private readonly backlog: FuseRequest[] = [];
  private backlogHead = 0;
  private publishScheduled = false;
  private readonly out: FuseOutHeader = { len: 0, error: 0, unique: 0 };
  private readonly onUsedBound = (req: FuseRequest, written: number): void => this.onUsed(req, written);
  private readonly publishBound = (): void => this.publish();
  private idleWaiters: Array<() => void> = [];
  broken: VirtioFsError | null = null;

  /** Records made so far: each is made the first time all earlier ones are in use, up to recordCount. */
  private made = 0;

  constructor(
    readonly name: string,
    private readonly transport: VirtioTransport,
    readonly queue: VirtqueueDriver<FuseRequest>,
    private readonly recordCount: number,
  ) {
    // The DMA slots are taken now; their records (three typed-array views each) when
    // first needed: making all of them up front (a queue's size, twice) cost tens of ms of
    // a cold guest's boot under TCG, for records most programs never use at once.
    this.slots = new BufferPool(transport.dma, SLOT_SIZE, recordCount);
  }

  /** Most data descriptors one request may use on this queue. */
  get maxDataSegments(): number {
    return Math.max(1, this.queue.size - 2);
  }

  /** A free request record, waiting for one when all are in use. */
  acquire(): FuseRequest | Promise<FuseRequest> {
    const r = this.records.pop();
    if (r !== undefined) return r;
    if (this.made < this.recordCount) {
      this.made++;
      const s = this.slots.alloc();
      return new FuseRequest(s, this.slots.views[s]!, this.slots.addrs[s]!);
    }
    return new Promise((resolve) => this.recordWaiters.push(resolve));
  }

  release(req: FuseRequest): void {
    req.resolve = req.reject = noop;
    const w = this.recordWaiters.shift();
    if (w !== undefined) w(req);
    else this.records.push(req);
  }

  /** Sends a prepared request; the promise settles when the device answers. */
  submit(req: FuseRequest): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      if (this.broken) {
        reject(this.broken);
        return;
      }
      req.resolve = resolve;
      req.reject = reject;
      this.stats.submitted++;
      if (this.backlogHead < this.backlog.length || this.queue.numFree < req.descriptorsNeeded) {
        this.backlog.push(req);
        this.stats.backlogged++;
        const waiting = this.backlog.length - this.backlogHead;
        if (waiting > this.stats.maxBacklog) this.stats.maxBacklog = waiting;
        return;
      }
      this.add(req);
      this.schedulePublish();
    });
  }

  private add(req: FuseRequest): void {
    const q = this.queue;
    q.chainBegin();
    q.chainAdd(req.addr, req.reqLen, false);
    if (req.replyLen > 0) q.chainAdd(req.addr + REPLY_OFFSET, req.replyLen, true);
    for (let i = 0; i < req.dataCount; i++) q.chainAdd(req.dataAddrs[i]!, req.dataLens[i]!, true);
    q.chainCommit(req);
    const inFlight = ++this.stats.inFlight;
    if (inFlight > this.stats.maxInFlight) this.stats.maxInFlight = inFlight;
  }

  private schedulePublish(): void {
    if (this.publishScheduled) return;
    this.publishScheduled = true;
    queueMicrotask(this.publishBound);
  }

  private publish(): void {
    this.publishScheduled = false;
    if (this.broken) return;
    try {
      if (this.queue.publish()) {
        this.stats.notifications++;
        this.transport.notify(this.queue.index);
      }
    } catch (e) {
      this.fail(e);
    }
  }

  /** Collects answers (called from the interrupt handler), then refills from the backlog. */
  service(): void {
    if (this.broken) return;
    try {
      do this.queue.drainUsed(this.onUsedBound);
      while (this.queue.enableInterrupts());
    } catch (e) {
      this.fail(e);
      return;
    }
    let added = false;
    while (this.backlogHead < this.backlog.length) {
      const req = this.backlog[this.backlogHead]!;
      if (this.queue.numFree < req.descriptorsNeeded) break;
      this.backlog[this.backlogHead++] = undefined as unknown as FuseRequest;
      this.add(req);
      added = true;
    }
    if (this.backlogHead === this.backlog.length) {
      this.backlog.length = 0;
      this.backlogHead = 0;
    }
    if (added) this.schedulePublish();
    if (this.idle) this.wakeIdle();
  }

  private onUsed(req: FuseRequest, written: number): void {
    this.stats.inFlight--;
    this.stats.completed++;
    if (req.replyLen === 0) {
      req.resolve(0);
      return;
    }
    let errno: number;
    try {
      errno = decodeOutHeader(req.dv, REPLY_OFFSET, written, req.opcode, req.unique, this.out);
    } catch (e) {
      this.stats.badReplies++;
      req.reject(e);
      return;
    }
    if (errno !== 0) req.resolve(-errno);
    else req.resolve(written - FUSE_OUT_HEADER_SIZE);
  }

  private fail(e: unknown): void {
    if (this.broken) return;
    this.broken = new VirtioFsError('ERR_VIRTIO_FS_QUEUE_BROKEN', `${this.name}: ${(e as Error).message}`, { cause: e });
    // Nothing in flight will ever be answered: fail it all.
    for (let head = 0; head < this.queue.size; head++) {
      const req = this.queue.tokenOf(head);
      if (req !== undefined) req.reject(this.broken);
    }
    for (let i = this.backlogHead; i < this.backlog.length; i++) this.backlog[i]!.reject(this.broken);
    this.backlog.length = 0;
    this.backlogHead = 0;
    this.stats.inFlight = 0;
    this.wakeIdle();
  }

  /** True when nothing is in flight or waiting. */
  get idle(): boolean {
    return this.stats.inFlight === 0 && this.backlogHead === this.backlog.length;
  }

  /** Resolves when every submitted request has been answered (or the queue broke). */
  whenIdle(): Promise<void> {
    if (this.idle || this.broken) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private wakeIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  destroy(): void {
    this.slots.destroy();
  }
}

