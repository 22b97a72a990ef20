// The driver half of a packed virtqueue (virtio 1.2, 2.8.21 "Supplying Buffers to The
// Device" and 2.8.22 "Receiving Used Buffers From The Device").
//
// One ring holds both directions: the driver writes available descriptors at its next
// position, in order, a chain's descriptors one after the other; the device overwrites
// the first descriptor of each chain it has finished (in the order it finishes them,
// 2.8.2) with a used descriptor carrying the chain's buffer id, and both sides skip the
// rest of that chain (2.8.6). So the driver keeps, per buffer id, how many descriptors
// the chain took. With VIRTIO_F_IN_ORDER one used descriptor may stand for a batch:
// every chain made available before the one it names is used too, completely (2.8.8).
//
// As in the split half, every piece of bookkeeping (free buffer ids, tokens, chain
// lengths, which ids were made available) lives in JavaScript, and a device that names
// an id that is not outstanding and made available, or claims more bytes than a chain
// holds, gets the queue marked broken (Linux virtio_ring.c BAD_RING).
//
// Batching: the first descriptor of a chain is made available only after the rest of
// the chain is written (2.8.6). Within a batch (chains committed between two publish()
// calls) only the first chain's first descriptor waits for publish(): the device looks
// at one position only, so later chains stay unseen until that store, which is the
// batch's single Atomics.store (the release fence; it also orders the read of the
// device's event suppression structure after it, 2.8.21.3.1).
//
// Memory ordering on the way back mirrors the device half's: the device makes a batch
// of used descriptors visible with one release (its first descriptor's id and flags in
// one 32-bit store), written where we stopped last time; so each drainUsed() reads the
// first id and flags with an acquiring Atomics.load and the rest with plain loads,
// covered by that acquire or, for a batch flushed meanwhile, by x86's ordering (see
// packed-device-queue.ts). Id and flags always travel as one 32-bit word, in both
// directions: a 32-bit load of two 16-bit stores still in the store buffer stalls.
import { checkRingPart } from './descriptor-chain.js';
import { VirtqueueError } from './errors.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, checkQueueSize } from './layout.js';
import {
  EVENT_SUPPRESS_ALIGN,
  EVENT_SUPPRESS_BYTES,
  PACKED_DESC_ALIGN,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  descRingBytes,
  eventWantsNotification,
  idleFlags,
  linear,
  offWrap,
} from './packed-layout.js';
import { type DriverQueueOptions, type RingPart, type UsedCallback, type VirtqueueDriver, addChain } from './queue.js';

const NONE = -1;
const AVAIL_USED = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;

/**
 * Flag values for the hot paths (chainAdd, chainCommit, drainUsed): esbuild writes a
 * file's own enum members as literals, where a module constant costs a load and a check
 * at each use, and bytecode (see chainAdd). The same values as layout.ts and
 * packed-layout.ts (checked below); in the id-and-flags word the flags are the high half.
 */
const enum F {
  NEXT = 1,
  WRITE = 2,
  AVAIL_USED = 0x8080,
  /** VIRTQ_DESC_F_NEXT in the id-and-flags word. */
  WORD_NEXT = 0x10000,
  /** VIRTQ_DESC_F_WRITE in the id-and-flags word. */
  WORD_WRITE = 0x20000,
}
if (F.NEXT !== VIRTQ_DESC_F_NEXT || F.WRITE !== VIRTQ_DESC_F_WRITE || F.AVAIL_USED !== AVAIL_USED || F.WORD_NEXT !== VIRTQ_DESC_F_NEXT << 16 || F.WORD_WRITE !== VIRTQ_DESC_F_WRITE << 16) {
  throw new Error('packed-driver-queue: flag values out of step with the layout');
}

export class PackedVirtqueueDriver<T = unknown> implements VirtqueueDriver<T> {
  readonly layout = 'packed' as const;
  readonly name: string;
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly inOrder: boolean;
  readonly desc: RingPart;
  /** Driver Event Suppression (we write it). */
  readonly avail: RingPart;
  /** Device Event Suppression (the device writes it). */
  readonly used: RingPart;

  // Views on shared memory.
  private readonly descU32: Uint32Array; // [addr_lo, addr_hi, len, id | flags << 16] per entry
  private readonly descU16: Uint16Array; // id at 8*i + 6, flags at 8*i + 7
  private readonly driverEvent: Uint16Array; // [desc (off | wrap << 15), flags]
  private readonly deviceEvent: Uint32Array; // one le32: desc | flags << 16, read at once

  // Ring positions and wrap counters (2.8.1).
  private nextAvail = 0;
  private availWrap = 1;
  private availBits = VIRTQ_DESC_F_AVAIL; // availFlags(availWrap): AVAIL = the counter, USED = its inverse
  private lastUsed = 0;
  private usedWrap = 1;
  private usedBits = AVAIL_USED; // AVAIL and USED of a descriptor used in this lap (2.8.1): both = usedWrap
  private free: number; // descriptors not in committed chains (the chain being built takes its own at commit)
  private publishedL = 0; // linear position at the last publish()

  // Buffer ids (private bookkeeping, indexed by id).
  private readonly freeIds: Uint16Array;
  private freeIdCount: number;
  private readonly tokens: (T | undefined)[];
  private readonly chainDescs: Uint16Array; // ring descriptors per outstanding id (0 = not outstanding)
  private readonly chainWritable: Float64Array; // device-writable bytes per outstanding id
  private readonly commitSeq: Float64Array; // commit number (from 1) per id: made available when <= publishedSeq
  private commitCount = 0;
  private publishedSeq = 0;
  /** IN_ORDER: outstanding ids in the order they were committed (a ring of `size`). */
  private readonly order: Uint16Array;
  private orderHead = 0;
  private orderCount = 0;

  // The batch's first head, made available by publish().
  private pendingHead = NONE;
  private pendingHeadWord = 0; // its id | flags << 16, stored at once by publish()

  // Chain being built by chainBegin/chainAdd/chainCommit. Its first descriptor is at
  // nextAvail; when no chain is being built, buildPos = nextAvail and buildBits = availBits.
  private buildId = 0; // its buffer id, taken from freeIds with its first descriptor
  private buildCount = 0;
  private buildPos = 0; // position of its next descriptor
  private buildBits = VIRTQ_DESC_F_AVAIL; // availFlags() of the wrap counter at buildPos
  private buildWord = 0; // id and flags of its last descriptor so far, when not the first
  private buildHeadFlags = 0; // flags of its first one (without NEXT), stored at commit or publish
  private buildWritable = 0;
  /**
   * The least flags the next descriptor may have: the last one's. 0, then
   * VIRTQ_DESC_F_WRITE once a writable one was added (readable ones come first, 2.8.17),
   * VIRTQ_DESC_F_INDIRECT after an indirect table (nothing may follow it, 2.8.19, and
   * chainAddIndirect takes only a chain's first). One comparison in chainAdd.
   */
  private addFloor = 0;

  private interruptsDisabled = false;
  private eventFlagsShadow = RING_EVENT_FLAGS_ENABLE;
  private usedCount = 0;

  /** Set when the device broke the ring protocol; every later call throws it. */
  broken: VirtqueueError | null = null;

  constructor(opts: DriverQueueOptions) {
    checkQueueSize(opts.size, opts.name);
    const { size } = opts;
    checkRingPart(opts.name, opts.desc, descRingBytes(size), PACKED_DESC_ALIGN, 'descriptor ring');
    checkRingPart(opts.name, opts.avail, EVENT_SUPPRESS_BYTES, EVENT_SUPPRESS_ALIGN, 'driver event suppression');
    checkRingPart(opts.name, opts.used, EVENT_SUPPRESS_BYTES, EVENT_SUPPRESS_ALIGN, 'device event suppression');
    this.name = opts.name;
    this.index = opts.index;
    this.size = size;
    this.eventIdx = opts.eventIdx;
    this.inOrder = opts.inOrder ?? false;
    this.desc = opts.desc;
    this.avail = opts.avail;
    this.used = opts.used;
    const buf = (p: RingPart): ArrayBuffer => p.bytes.buffer as ArrayBuffer;
    this.descU32 = new Uint32Array(buf(opts.desc), opts.desc.bytes.byteOffset, 4 * size);
    this.descU16 = new Uint16Array(buf(opts.desc), opts.desc.bytes.byteOffset, 8 * size);
    this.driverEvent = new Uint16Array(buf(opts.avail), opts.avail.bytes.byteOffset, 2);
    this.deviceEvent = new Uint32Array(buf(opts.used), opts.used.bytes.byteOffset, 1);
    this.freeIds = new Uint16Array(size);
    this.freeIdCount = size;
    this.tokens = new Array<T | undefined>(size).fill(undefined);
    this.chainDescs = new Uint16Array(size);
    this.chainWritable = new Float64Array(size);
    this.commitSeq = new Float64Array(size);
    this.order = new Uint16Array(size);
    this.free = size;
    this.resetRings();
  }

  /** Zeroes the rings and the bookkeeping (queue setup and device reset). */
  resetRings(): void {
    this.desc.bytes.fill(0, 0, descRingBytes(this.size));
    this.avail.bytes.fill(0, 0, EVENT_SUPPRESS_BYTES);
    this.used.bytes.fill(0, 0, EVENT_SUPPRESS_BYTES);
    // Ids handed out lowest first.
    for (let i = 0; i < this.size; i++) this.freeIds[i] = this.size - 1 - i;
    this.freeIdCount = this.size;
    this.tokens.fill(undefined);
    this.chainDescs.fill(0);
    this.commitSeq.fill(0);
    this.commitCount = this.publishedSeq = 0;
    this.orderHead = this.orderCount = 0;
    this.free = this.size;
    this.nextAvail = this.lastUsed = 0;
    this.availWrap = this.usedWrap = 1;
    this.availBits = VIRTQ_DESC_F_AVAIL;
    this.usedBits = AVAIL_USED;
    this.publishedL = 0;
    this.pendingHead = NONE;
    this.buildCount = 0;
    this.buildPos = 0;
    this.buildBits = VIRTQ_DESC_F_AVAIL;
    this.addFloor = 0;
    this.interruptsDisabled = false;
    this.usedCount = 0;
    this.broken = null;
    // With EVENT_IDX, ask for an interrupt at the first used descriptor (2.8.10);
    // without, interrupts are simply enabled (the zeroed structure says so).
    this.eventFlagsShadow = RING_EVENT_FLAGS_ENABLE;
    if (this.eventIdx) {
      this.driverEvent[0] = offWrap(0, 1);
      this.setEventFlags(RING_EVENT_FLAGS_DESC);
    }
  }

  get numFree(): number {
    return this.free - this.buildCount;
  }

  get outstanding(): number {
    return this.size - this.free;
  }

  // ---- Building a chain: begin, add buffers (readable first), commit with a token.

  chainBegin(): void {
    if (this.broken !== null) throw this.broken;
    if (this.buildCount !== 0) this.chainAbort();
    this.buildWritable = 0;
    this.addFloor = 0;
  }

  /**
   * An indirect table as the chain's only descriptor (2.8.19: "A driver MUST NOT write
   * direct descriptors with DESC_F_INDIRECT set in a scatter-gather list linked by
   * VIRTQ_DESC_F_NEXT").
   */
  chainAddIndirect(tableAddr: number, count: number, writableBytes = 0): void {
    if (this.buildCount !== 0) throw new RangeError(`${this.name}: on a packed ring an indirect table must be the chain's only descriptor`);
    this.addFloor = 0; // the chain's first descriptor, whatever came before
    this.chainAdd(tableAddr, count * 16, false);
    // Its flags are still in buildHeadFlags.
    this.buildHeadFlags |= VIRTQ_DESC_F_INDIRECT;
    this.addFloor = VIRTQ_DESC_F_INDIRECT;
    this.buildWritable += writableBytes;
  }

  /** An entry of a packed indirect table (2.8.7): le64 addr, le32 len, le16 id (reserved), le16 flags (WRITE only). */
  writeIndirectEntry(table: DataView, i: number, _count: number, addr: number, length: number, writable: boolean): void {
    const o = i * 16;
    table.setUint32(o, addr >>> 0, true);
    table.setUint32(o + 4, Math.floor(addr / 0x100000000), true);
    table.setUint32(o + 8, length, true);
    table.setUint16(o + 12, 0, true);
    table.setUint16(o + 14, writable ? VIRTQ_DESC_F_WRITE : 0, true);
  }

  /**
   * Appends one buffer: writes one available descriptor of the chain being built
   * (2.8.21.1) at buildPos. Device-readable buffers must come before writable ones (2.8.17).
   *
   * The hot path of every driver, kept small in bytecode: V8 inlines a method into its
   * caller's loop only within a budget of bytecode per caller (about 920 bytes in all,
   * Node 20), so the refusals live in refuseAdd and the flags are literals (F).
   *
   * The chain's first descriptor gets its address and length here, its flags wait in
   * buildHeadFlags for the commit (the head is made available last, 2.8.6). Every later
   * one is written whole (id and flags in one 32-bit store), as the chain's last; the
   * next one, if any, adds NEXT to it. The id goes in every descriptor (the device reads
   * the last one's, 2.8.6).
   */
  chainAdd(addr: number, length: number, writable: boolean): void {
    const flags = writable ? F.WRITE : 0;
    // One comparison for both orders: readable before writable, nothing after indirect.
    const count = this.buildCount;
    if (flags < this.addFloor || count === this.free) this.refuseAdd(flags);
    this.addFloor = flags;
    if (writable) this.buildWritable += length;
    this.buildCount = count + 1;
    const pos = this.buildPos;
    const d = this.descU32;
    const b = pos * 4;
    // A Uint32Array store keeps an integer modulo 2^32 and truncates a fraction: the low
    // half, and the high one (exact for any address below 2^53).
    d[b] = addr;
    d[b + 1] = addr / 0x100000000;
    d[b + 2] = length;
    // 2.8.1: AVAIL = the Driver Ring Wrap Counter, USED = its inverse (buildBits).
    const f = flags | this.buildBits;
    if (count === 0) {
      // Ids run out only with the descriptors: each outstanding chain holds at least one.
      this.buildId = this.freeIds[--this.freeIdCount]!;
      this.buildHeadFlags = f;
    } else {
      if (count !== 1) this.linkPrevious(pos);
      const word = this.buildId | (f << 16);
      this.buildWord = word;
      d[b + 3] = word;
    }
    if (pos + 1 === this.size) this.wrapBuild();
    else this.buildPos = pos + 1;
  }

  /** A chain's third descriptor or later at `pos`: the one before it (not the head) gets NEXT (2.8.6). */
  private linkPrevious(pos: number): void {
    this.descU32[((pos === 0 ? this.size : pos) - 1) * 4 + 3] = this.buildWord | F.WORD_NEXT;
  }

  /** The chain being built passes the end of the ring: its next descriptor is in the next lap (2.8.1). */
  private wrapBuild(): void {
    this.buildPos = 0;
    this.buildBits ^= F.AVAIL_USED;
  }

  /** Why chainAdd cannot add (kept out of the hot path). */
  private refuseAdd(flags: number): never {
    if (this.addFloor === VIRTQ_DESC_F_WRITE && flags < this.addFloor) {
      throw new VirtqueueError('ERR_VIRTQ_READABLE_AFTER_WRITABLE', this.name, 'a device-readable buffer cannot follow a writable one');
    }
    if (this.buildCount === this.free) throw new VirtqueueError('ERR_VIRTQ_FULL', this.name, `no free descriptor (queue size ${this.size})`);
    throw new RangeError(`${this.name}: nothing can follow an indirect table on a packed ring`);
  }

  /** Commits the chain (visible to the device only after publish). Returns its buffer id. */
  chainCommit(token: T): number {
    const count = this.buildCount;
    if (count === 0) this.emptyCommit();
    const id = this.buildId;
    const head = id | ((this.buildHeadFlags | (count === 1 ? 0 : F.NEXT)) << 16);
    this.free -= count;
    this.tokens[id] = token;
    this.chainDescs[id] = count;
    this.chainWritable[id] = this.buildWritable;
    this.commitSeq[id] = ++this.commitCount;
    if (this.inOrder) this.recordOrder(id);
    if (this.pendingHead < 0) {
      this.pendingHead = this.nextAvail;
      this.pendingHeadWord = head;
    } else {
      // Not the batch's first chain: the device cannot reach it before publish().
      this.descU32[this.nextAvail * 4 + 3] = head;
    }
    this.nextAvail = this.buildPos;
    if (this.availBits !== this.buildBits) this.wrapAvail();
    this.buildCount = 0;
    return id;
  }

  private emptyCommit(): never {
    throw new RangeError(`${this.name}: commit of an empty chain`);
  }

  /** The chain just committed passed the end of the ring: the Driver Ring Wrap Counter flips (2.8.1). */
  private wrapAvail(): void {
    this.availBits = this.buildBits;
    this.availWrap ^= 1;
  }

  /** IN_ORDER: remembers the commit order (2.8.8). */
  private recordOrder(id: number): void {
    let at = this.orderHead + this.orderCount++;
    if (at >= this.size) at -= this.size;
    this.order[at] = id;
  }

  /** Drops a chain being built: its descriptors stay unavailable, its id and slots return. */
  chainAbort(): void {
    if (this.buildCount === 0) return;
    // Descriptors after the first already carry available flags: withdraw them, or the
    // device, reaching them after a shorter chain, would take them (the first one's
    // flags were never stored).
    let pos = this.nextAvail;
    let wrap = this.availWrap;
    for (let i = 0; i < this.buildCount; i++) {
      if (i > 0) this.descU16[pos * 8 + 7] = idleFlags(wrap);
      if (++pos === this.size) {
        pos = 0;
        wrap ^= 1;
      }
    }
    this.freeIds[this.freeIdCount++] = this.buildId;
    this.buildCount = 0;
    this.buildPos = this.nextAvail;
    this.buildBits = this.availBits;
  }

  /** Convenience (allocates): one chain from [addr, len] lists. Returns its id. */
  add(token: T, readable: ReadonlyArray<readonly [number, number]>, writable: ReadonlyArray<readonly [number, number]> = []): number {
    return addChain(this, token, readable, writable);
  }

  /**
   * Makes every committed chain available (one store: the batch's first head) and says
   * whether the device wants a notification (2.8.21.3: its event suppression structure,
   * with RING_EVENT_FLAGS_DESC the position it waits for, 2.8.10).
   */
  publish(): boolean {
    if (this.broken) throw this.broken;
    if (this.pendingHead === NONE) return false;
    // Sequentially consistent: every descriptor written before is visible first, and the
    // load below cannot move above it.
    Atomics.store(this.descU32, this.pendingHead * 4 + 3, this.pendingHeadWord);
    this.pendingHead = NONE;
    this.publishedSeq = this.commitCount;
    const oldL = this.publishedL;
    const newL = linear(this.nextAvail, this.availWrap, this.size);
    this.publishedL = newL;
    return eventWantsNotification(Atomics.load(this.deviceEvent, 0), this.eventIdx, newL, oldL, this.size);
  }

  /** True when the descriptor at our next used position is used in this lap (2.8.1). */
  hasUsed(): boolean {
    return (Atomics.load(this.descU16, this.lastUsed * 8 + 7) & AVAIL_USED) === this.usedBits;
  }

  /** Collected chains, plus one when the next used descriptor is there: it moves whenever the device returns chains. */
  usedProgress(): number {
    return this.usedCount + (this.hasUsed() ? 1 : 0);
  }

  /**
   * Collects used chains, calling `onUsed(token, writtenLength)` for each, and frees
   * their ids and descriptors. A used descriptor naming an id that is not outstanding
   * and made available, or a length beyond what the chain can take, marks the queue
   * broken and throws. Returns the number collected.
   */
  drainUsed(onUsed: UsedCallback<T>, max = Infinity): number {
    if (this.broken !== null) throw this.broken;
    // The arrays are fixed, so they are read once; the positions and counts are read
    // from the fields each time (onUsed may add chains, publish, or drain).
    const d32 = this.descU32;
    const chainDescs = this.chainDescs;
    const commitSeq = this.commitSeq;
    const chainWritable = this.chainWritable;
    const tokens = this.tokens;
    const freeIds = this.freeIds;
    const size = this.size;
    let n = 0;
    // See "Memory ordering" at the top: the first read acquires, the rest are plain;
    // each reads id and flags at once (the device stores them together). As int32 (| 0):
    // with USED set the word is beyond a small integer and would be boxed.
    let word = Atomics.load(d32, this.lastUsed * 4 + 3) | 0;
    while (n < max) {
      const slot = this.lastUsed;
      if (n > 0) word = d32[slot * 4 + 3]! | 0;
      // Used in this lap: AVAIL = USED = our Device Ring Wrap Counter copy (2.8.1).
      if (((word >>> 16) & F.AVAIL_USED) !== this.usedBits) break;
      const id = word & 0xffff;
      let len = d32[slot * 4 + 2]!;
      if (id >= size) throw this.badUsed(slot, id, len);
      const count = chainDescs[id]!;
      if (count === 0 || commitSeq[id]! > this.publishedSeq) throw this.badUsed(slot, id, len);
      if (len > chainWritable[id]!) {
        // 2.8.4 makes the length reserved without WRITE, but QEMU 7.2 never sets WRITE
        // in a used descriptor and Linux reads the length regardless: so do we, and a
        // length too long for the chain is an error only when WRITE says it is one.
        if ((word & F.WORD_WRITE) !== 0) throw this.badUsed(slot, id, len);
        len = 0;
      }
      if (this.inOrder) n += this.completeBefore(id, onUsed);
      // Free the chain and skip its descriptors (2.8.6), as complete() does.
      const token = tokens[id] as T;
      tokens[id] = undefined;
      chainDescs[id] = 0;
      freeIds[this.freeIdCount++] = id;
      this.free += count;
      const next = this.lastUsed + count; // (completeBefore moves it)
      if (next < size) this.lastUsed = next;
      else this.wrapUsed(next);
      this.usedCount++;
      n++;
      onUsed(token, len);
    }
    // With EVENT_IDX, ask for an interrupt at the next used descriptor (Linux does
    // this in virtqueue_get_buf_ctx_packed); the caller re-checks hasUsed() or
    // enableInterrupts() after.
    if (n > 0 && this.eventIdx && !this.interruptsDisabled) Atomics.store(this.driverEvent, 0, offWrap(this.lastUsed, this.usedWrap));
    return n;
  }

  /** A used descriptor that cannot be: the queue is broken (Linux BAD_RING). */
  private badUsed(slot: number, id: number, len: number): VirtqueueError {
    if (id >= this.size || this.chainDescs[id] === 0 || this.commitSeq[id]! > this.publishedSeq) {
      return this.markBroken(new VirtqueueError('ERR_VIRTQ_USED_ID', this.name, `used descriptor ${slot} names buffer id ${id}, which is not an outstanding chain made available`, slot));
    }
    return this.markBroken(new VirtqueueError('ERR_VIRTQ_USED_LEN', this.name, `used descriptor ${slot}: length ${len} for buffer id ${id} exceeds its ${this.chainWritable[id]} writable bytes`, slot));
  }

  /** IN_ORDER (2.8.8): the chains made available before `id` are used too, completely. Returns how many. */
  private completeBefore(id: number, onUsed: UsedCallback<T>): number {
    let n = 0;
    for (;;) {
      const first = this.order[this.orderHead]!;
      if (++this.orderHead === this.size) this.orderHead = 0;
      this.orderCount--;
      if (first === id) return n;
      const written = this.chainWritable[first]!;
      const token = this.complete(first);
      n++;
      onUsed(token, written);
    }
  }

  /** Frees an outstanding chain and skips its descriptors (2.8.6); returns its token. */
  private complete(id: number): T {
    const token = this.tokens[id] as T;
    const count = this.chainDescs[id]!;
    this.tokens[id] = undefined;
    this.chainDescs[id] = 0;
    this.freeIds[this.freeIdCount++] = id;
    this.free += count;
    const next = this.lastUsed + count;
    if (next < this.size) this.lastUsed = next;
    else this.wrapUsed(next);
    this.usedCount++;
    return token;
  }

  /** Our used position passes the end of the ring: our copy of the Device Ring Wrap Counter flips (2.8.1). */
  private wrapUsed(next: number): void {
    this.lastUsed = next - this.size;
    this.usedWrap ^= 1;
    this.usedBits ^= F.AVAIL_USED;
  }

  private setEventFlags(flags: number): void {
    if (this.eventFlagsShadow === flags) return;
    this.eventFlagsShadow = flags;
    Atomics.store(this.driverEvent, 1, flags);
  }

  /**
   * Asks the device not to interrupt (a hint, 2.8.10). With EVENT_IDX the event
   * position simply stops moving (no store); without, RING_EVENT_FLAGS_DISABLE.
   */
  disableInterrupts(): void {
    if (this.interruptsDisabled) return;
    this.interruptsDisabled = true;
    if (!this.eventIdx) this.setEventFlags(RING_EVENT_FLAGS_DISABLE);
  }

  /**
   * Re-enables interrupts and returns true when used chains arrived meanwhile: the
   * caller must drain again, or an interrupt can be lost (Linux virtqueue_enable_cb).
   */
  enableInterrupts(): boolean {
    this.interruptsDisabled = false;
    if (this.eventIdx) Atomics.store(this.driverEvent, 0, offWrap(this.lastUsed, this.usedWrap));
    else this.setEventFlags(RING_EVENT_FLAGS_ENABLE);
    return this.hasUsed();
  }

  /**
   * With EVENT_IDX, asks for the interrupt only once the device has used about 3/4 of
   * the descriptors now outstanding (Linux virtqueue_enable_cb_delayed_packed); returns
   * true when it has already: the caller must drain again. With IN_ORDER or without
   * EVENT_IDX this is enableInterrupts().
   */
  enableInterruptsDelayed(): boolean {
    if (!this.eventIdx || this.inOrder) return this.enableInterrupts();
    this.interruptsDisabled = false;
    const bufs = ((this.size - this.free) * 3) >> 2;
    let pos = this.lastUsed + bufs;
    let wrap = this.usedWrap;
    if (pos >= this.size) {
      pos -= this.size;
      wrap ^= 1;
    }
    Atomics.store(this.driverEvent, 0, offWrap(pos, wrap));
    // Passed already? Walk the used descriptors there are (without collecting them):
    // the device skips each chain's descriptors, so the event position may fall inside
    // a chain and never hold a used descriptor itself.
    let at = this.lastUsed;
    let atWrap = this.usedWrap;
    for (let walked = 0; walked <= bufs; ) {
      const f = Atomics.load(this.descU16, at * 8 + 7);
      if ((f & AVAIL_USED) !== (atWrap !== 0 ? AVAIL_USED : 0)) return false;
      const id = this.descU16[at * 8 + 6]!;
      const count = id < this.size ? this.chainDescs[id]! : 0;
      if (count === 0) return true; // a bad id: let drainUsed report it
      walked += count;
      at += count;
      if (at >= this.size) {
        at -= this.size;
        atWrap ^= 1;
      }
    }
    return true;
  }

  /** The token of an outstanding chain by its buffer id. */
  tokenOf(id: number): T | undefined {
    return this.tokens[id];
  }

  private markBroken(err: VirtqueueError): VirtqueueError {
    this.broken = err;
    return err;
  }
}
