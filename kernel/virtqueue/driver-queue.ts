// The driver half of a split virtqueue (virtio 1.2, 2.7.13 "Supplying Buffers to
// The Device" and 2.7.14 "Receiving Used Buffers From The Device").
//
// All bookkeeping (free list, tokens, chain lengths) lives in JavaScript and is never
// read back from shared memory: the device can scribble on the rings and only ever
// gets the queue marked broken, never our state corrupted (Linux virtio_ring.c does
// the same). Adds are batched: descriptors and avail entries are written at once, but
// avail.idx is published, and the device notified, only in publish().
import {
  AVAIL_ALIGN,
  DESC_ALIGN,
  USED_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  availRingBytes,
  checkQueueSize,
  descTableBytes,
  usedRingBytes,
  vringNeedEvent,
} from './layout.js';
import { checkRingPart } from './descriptor-chain.js';
import { VirtqueueError } from './errors.js';
import { type DriverQueueOptions, type RingPart, type UsedCallback, type VirtqueueDriver, addChain } from './queue.js';

export type { DriverQueueOptions, RingPart, UsedCallback, VirtqueueDriver } from './queue.js';

const NO_DESC = 0xffff;

export class SplitVirtqueueDriver<T = unknown> implements VirtqueueDriver<T> {
  readonly layout = 'split' as const;
  readonly name: string;
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly desc: RingPart;
  readonly avail: RingPart;
  readonly used: RingPart;

  // Views on shared memory.
  private readonly descU32: Uint32Array; // [addr_lo, addr_hi, len, flags | next << 16] per entry
  private readonly availU16: Uint16Array; // flags, idx, ring[size], used_event
  private readonly usedU16: Uint16Array; // flags, idx, ..., avail_event at 2 + 4*size
  private readonly usedU32: Uint32Array; // ring entries at 1 + 2*i (id), 2 + 2*i (len)

  // Private bookkeeping.
  private readonly nextFree: Uint16Array;
  private freeHead = 0;
  private free: number;
  private readonly tokens: (T | undefined)[];
  private readonly chainLength: Uint16Array; // descriptors per outstanding head (0 = not outstanding)
  private readonly chainWritable: Float64Array; // device-writable bytes per outstanding head
  private availIdx = 0; // next avail.idx to publish (shadow)
  private publishedIdx = 0; // avail.idx at the last publish()
  private lastUsedIdx = 0;
  private interruptsDisabled = false;

  // Chain being built by chainBegin/chainAdd/chainCommit.
  private buildHead = NO_DESC;
  private buildTail = NO_DESC;
  private buildCount = 0;
  private buildWritable = 0;
  private buildSeenWritable = false;

  /** Set when the device broke the ring protocol; every later call throws it. */
  broken: VirtqueueError | null = null;

  constructor(opts: DriverQueueOptions) {
    checkQueueSize(opts.size, opts.name);
    const { size } = opts;
    checkRingPart(opts.name, opts.desc, descTableBytes(size), DESC_ALIGN, 'descriptor table');
    checkRingPart(opts.name, opts.avail, availRingBytes(size), AVAIL_ALIGN, 'available ring');
    checkRingPart(opts.name, opts.used, usedRingBytes(size), USED_ALIGN, 'used ring');
    this.name = opts.name;
    this.index = opts.index;
    this.size = size;
    this.eventIdx = opts.eventIdx;
    this.desc = opts.desc;
    this.avail = opts.avail;
    this.used = opts.used;
    const buf = (p: RingPart): ArrayBuffer => p.bytes.buffer as ArrayBuffer;
    this.descU32 = new Uint32Array(buf(opts.desc), opts.desc.bytes.byteOffset, 4 * size);
    this.availU16 = new Uint16Array(buf(opts.avail), opts.avail.bytes.byteOffset, 3 + size);
    this.usedU16 = new Uint16Array(buf(opts.used), opts.used.bytes.byteOffset, 3 + 4 * size);
    this.usedU32 = new Uint32Array(buf(opts.used), opts.used.bytes.byteOffset, 1 + 2 * size);
    this.nextFree = new Uint16Array(size);
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.chainLength = new Uint16Array(size);
    this.chainWritable = new Float64Array(size);
    this.free = size;
    this.resetRings();
  }

  /** Zeroes the rings and the bookkeeping (queue setup and device reset). */
  resetRings(): void {
    this.desc.bytes.fill(0, 0, descTableBytes(this.size));
    this.avail.bytes.fill(0, 0, availRingBytes(this.size));
    this.used.bytes.fill(0, 0, usedRingBytes(this.size));
    for (let i = 0; i < this.size; i++) this.nextFree[i] = i + 1 < this.size ? i + 1 : NO_DESC;
    this.freeHead = 0;
    this.free = this.size;
    this.tokens.fill(undefined);
    this.chainLength.fill(0);
    this.availIdx = this.publishedIdx = this.lastUsedIdx = 0;
    this.interruptsDisabled = false;
    this.buildHead = this.buildTail = NO_DESC;
    this.buildCount = 0;
    this.broken = null;
  }

  /** Free descriptors (a chain of n buffers needs n). */
  get numFree(): number {
    return this.free;
  }

  /** Chains added and not yet returned by the device. */
  get outstanding(): number {
    return this.size - this.free - this.buildCount;
  }

  // ---- Building a chain: begin, add buffers (readable first), commit with a token.

  chainBegin(): void {
    if (this.broken) throw this.broken;
    if (this.buildCount !== 0) this.chainAbort();
    this.buildHead = this.buildTail = NO_DESC;
    this.buildWritable = 0;
    this.buildSeenWritable = false;
  }

  /** Appends one buffer. Device-readable buffers must come before writable ones (2.7.4.2). */
  chainAdd(addr: number, length: number, writable: boolean): void {
    this.chainAddRaw(addr, length, writable ? VIRTQ_DESC_F_WRITE : 0);
  }

  /**
   * Appends a descriptor pointing at an indirect table of `count` descriptors (2.7.5.3).
   * The caller has written the table (writeIndirectEntry) in device memory. Only as the
   * last descriptor of a chain.
   */
  chainAddIndirect(tableAddr: number, count: number, writableBytes = 0): void {
    this.chainAddRaw(tableAddr, count * 16, VIRTQ_DESC_F_INDIRECT);
    this.buildWritable += writableBytes;
  }

  /** An entry of a split indirect table (2.7.5.3): le64 addr, le32 len, le16 flags, le16 next. */
  writeIndirectEntry(table: DataView, i: number, count: number, addr: number, length: number, writable: boolean): void {
    const o = i * 16;
    table.setUint32(o, addr >>> 0, true);
    table.setUint32(o + 4, Math.floor(addr / 0x100000000), true);
    table.setUint32(o + 8, length, true);
    table.setUint16(o + 12, (writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < count ? VIRTQ_DESC_F_NEXT : 0), true);
    table.setUint16(o + 14, i + 1 < count ? i + 1 : 0, true);
  }

  private chainAddRaw(addr: number, length: number, flags: number): void {
    if (this.free === 0) throw new VirtqueueError('ERR_VIRTQ_FULL', this.name, `no free descriptor (queue size ${this.size})`);
    const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
    if (!writable && this.buildSeenWritable) {
      throw new VirtqueueError('ERR_VIRTQ_READABLE_AFTER_WRITABLE', this.name, 'a device-readable buffer cannot follow a writable one');
    }
    const d = this.freeHead;
    this.freeHead = this.nextFree[d]!;
    this.free--;
    const base = d * 4;
    this.descU32[base] = addr >>> 0;
    this.descU32[base + 1] = Math.floor(addr / 0x100000000);
    this.descU32[base + 2] = length >>> 0;
    this.descU32[base + 3] = flags; // next = 0 until a successor is linked
    if (this.buildTail !== NO_DESC) {
      const t = this.buildTail * 4 + 3;
      this.descU32[t] = (this.descU32[t]! | VIRTQ_DESC_F_NEXT) | (d << 16);
      this.nextFree[this.buildTail] = d;
    } else {
      this.buildHead = d;
    }
    this.buildTail = d;
    this.buildCount++;
    if (writable) {
      this.buildSeenWritable = true;
      this.buildWritable += length;
    }
  }

  /**
   * Puts the chain in the available ring (not yet visible to the device: see publish).
   * Returns the head descriptor index.
   */
  chainCommit(token: T): number {
    const head = this.buildHead;
    if (head === NO_DESC) throw new RangeError(`${this.name}: commit of an empty chain`);
    this.tokens[head] = token;
    this.chainLength[head] = this.buildCount;
    this.chainWritable[head] = this.buildWritable;
    this.availU16[2 + (this.availIdx & (this.size - 1))] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.buildHead = this.buildTail = NO_DESC;
    this.buildCount = 0;
    return head;
  }

  /** Drops a chain being built, returning its descriptors to the free list. */
  chainAbort(): void {
    let d = this.buildHead;
    for (let i = 0; i < this.buildCount; i++) {
      const next = this.nextFree[d]!;
      this.releaseDesc(d);
      d = next;
    }
    this.buildHead = this.buildTail = NO_DESC;
    this.buildCount = 0;
  }

  /** Convenience (allocates): one chain from [addr, len] lists. Returns the head. */
  add(token: T, readable: ReadonlyArray<readonly [number, number]>, writable: ReadonlyArray<readonly [number, number]> = []): number {
    return addChain(this, token, readable, writable);
  }

  /**
   * Makes every committed chain visible (one store of avail.idx) and says whether the
   * device wants a notification (2.7.13.4: with EVENT_IDX, vring_need_event on
   * avail_event; otherwise the used ring's NO_NOTIFY flag).
   */
  publish(): boolean {
    if (this.broken) throw this.broken;
    const newIdx = this.availIdx;
    const oldIdx = this.publishedIdx;
    if (newIdx === oldIdx) return false;
    // Atomics.store is sequentially consistent: the ring entries and descriptors
    // written before it are visible first, and the load below cannot move above it.
    Atomics.store(this.availU16, 1, newIdx);
    this.publishedIdx = newIdx;
    if (this.eventIdx) {
      const availEvent = Atomics.load(this.usedU16, 2 + 4 * this.size);
      return vringNeedEvent(availEvent, newIdx, oldIdx);
    }
    return (Atomics.load(this.usedU16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** True when the device has returned chains not yet collected. */
  hasUsed(): boolean {
    return Atomics.load(this.usedU16, 1) !== this.lastUsedIdx;
  }

  /** used.idx: it moves whenever the device returns chains. */
  usedProgress(): number {
    return Atomics.load(this.usedU16, 1);
  }

  /**
   * Collects used chains, calling `onUsed(token, writtenLength)` for each, and frees
   * their descriptors. Validates every id and length; a bad one marks the queue broken
   * and throws. Returns the number collected.
   */
  drainUsed(onUsed: UsedCallback<T>, max = Infinity): number {
    if (this.broken) throw this.broken;
    const usedIdx = Atomics.load(this.usedU16, 1);
    const pending = (usedIdx - this.lastUsedIdx) & 0xffff;
    if (pending > this.size - this.free) {
      throw this.markBroken(new VirtqueueError('ERR_VIRTQ_USED_INDEX', this.name, `used.idx ${usedIdx} is ${pending} ahead of ${this.lastUsedIdx}, more than the ${this.size - this.free} chains outstanding`));
    }
    let n = 0;
    while (this.lastUsedIdx !== usedIdx && n < max) {
      const slot = this.lastUsedIdx & (this.size - 1);
      const id = this.usedU32[1 + 2 * slot]!;
      const len = this.usedU32[2 + 2 * slot]!;
      if (id >= this.size || this.chainLength[id] === 0) {
        throw this.markBroken(new VirtqueueError('ERR_VIRTQ_USED_ID', this.name, `used ring entry ${slot} has id ${id}, which is not an outstanding chain`, id));
      }
      if (len > this.chainWritable[id]!) {
        throw this.markBroken(new VirtqueueError('ERR_VIRTQ_USED_LEN', this.name, `used length ${len} for chain ${id} exceeds its ${this.chainWritable[id]} writable bytes`, id));
      }
      const token = this.tokens[id] as T;
      this.freeChain(id);
      this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
      n++;
      onUsed(token, len);
    }
    // With EVENT_IDX, ask for an interrupt at the next used entry (Linux does this in
    // virtqueue_get_buf); the caller re-checks hasUsed() or enableInterrupts() after.
    if (n > 0 && this.eventIdx && !this.interruptsDisabled) Atomics.store(this.availU16, 2 + this.size, this.lastUsedIdx);
    return n;
  }

  private freeChain(head: number): void {
    let d = head;
    const n = this.chainLength[head]!;
    this.chainLength[head] = 0;
    this.tokens[head] = undefined;
    for (let i = 0; i < n; i++) {
      const next = this.nextFree[d]!;
      this.releaseDesc(d);
      d = next;
    }
  }

  private releaseDesc(d: number): void {
    this.nextFree[d] = this.freeHead;
    this.freeHead = d;
    this.free++;
  }

  /** Asks the device not to interrupt (a hint: 2.7.7). */
  disableInterrupts(): void {
    if (this.interruptsDisabled) return;
    this.interruptsDisabled = true;
    if (!this.eventIdx) Atomics.store(this.availU16, 0, VIRTQ_AVAIL_F_NO_INTERRUPT);
    // With EVENT_IDX we simply stop moving used_event forward.
  }

  /**
   * Re-enables interrupts and returns true when used chains arrived meanwhile: the
   * caller must drain again, or an interrupt can be lost (Linux virtqueue_enable_cb).
   */
  enableInterrupts(): boolean {
    this.interruptsDisabled = false;
    if (this.eventIdx) Atomics.store(this.availU16, 2 + this.size, this.lastUsedIdx);
    else Atomics.store(this.availU16, 0, 0);
    return this.hasUsed();
  }

  /**
   * Like enableInterrupts, but with EVENT_IDX asks for the interrupt only once about
   * 3/4 of the chains now outstanding have been used (Linux virtqueue_enable_cb_delayed):
   * for completions that are not urgent one by one (transmit buffers). Returns true
   * when that many were used already: the caller must drain again. Without EVENT_IDX
   * this is enableInterrupts().
   */
  enableInterruptsDelayed(): boolean {
    if (!this.eventIdx) return this.enableInterrupts();
    this.interruptsDisabled = false;
    // Chains (not descriptors) published and not yet used.
    const bufs = (((this.publishedIdx - this.lastUsedIdx) & 0xffff) * 3) >> 2;
    Atomics.store(this.availU16, 2 + this.size, (this.lastUsedIdx + bufs) & 0xffff);
    return ((Atomics.load(this.usedU16, 1) - this.lastUsedIdx) & 0xffff) > bufs;
  }

  /** The token of an outstanding chain (for diagnostics and tests). */
  tokenOf(head: number): T | undefined {
    return this.tokens[head];
  }

  private markBroken(err: VirtqueueError): VirtqueueError {
    this.broken = err;
    return err;
  }
}
