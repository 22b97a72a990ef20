// The device half of a packed virtqueue (virtio 1.2, 2.8): take available chains at our
// next position, walk their descriptors (direct, or one indirect table), write used
// descriptors back into the same ring, and decide when the driver wants an interrupt.
//
// The device looks at one position only (2.8.2): a descriptor there is available when
// its AVAIL bit equals our Driver Ring Wrap Counter copy and its USED bit does not
// (2.8.1). Chains may complete in any order: a used descriptor goes to our next used
// position and names the chain's buffer id, and we skip as many positions as the chain
// took (2.8.6). With VIRTIO_F_IN_ORDER, chains are pushed in the order taken and runs
// of completely used chains share one used descriptor (2.8.8).
//
// Everything in guest memory is hostile. Each descriptor is read once and checked, and
// a bad chain whose end we can find is refused with a VirtqueueError naming the queue
// and the descriptor: it is returned used with length 0 and the queue goes on. A ring
// we can no longer follow is marked broken (take() returns null until a reset;
// 2.8.21 / 2.1: the device then needs a reset, the transport decides how to say so):
// a descriptor at our position with AVAIL and USED both equal to the wrap counter
// (neither available nor anything we wrote), a chain that continues into a descriptor
// not made available in this lap (the driver made the first descriptor available
// before the rest, against 2.8.6), or a chain that does not end within the ring.
//
// Batching mirrors the driver: the first used descriptor written since the last
// flush() keeps its flags until flush(), so the driver sees a batch at once; that
// store is the batch's single Atomics.store and orders the read of the driver's event
// suppression structure after it.
//
// Memory ordering. A driver publishes a batch of chains with one release: the store of
// its first head's id and flags, one 32-bit Atomics.store. When we find no chain at our position, that
// position is where the driver's next batch begins, so the head read there is an
// acquiring Atomics.load, and everything the driver wrote for that batch is visible
// after it. Heads after it in the same run are read with plain loads: within the batch
// the acquire covers them; a batch the driver published while we were still taking
// the previous one is covered by x86's ordering (TSO: stores become visible in program
// order, loads are not reordered with loads), like Linux's virtio_rmb, a compiler
// barrier on x86. Atomics.load costs about 5 ns here (Node 20), a plain load under 1.
import type { GuestMemory } from '../memory/guest-memory.js';
import { DescriptorChain, addSegment, locateIndirectTable, mapRingPart } from './descriptor-chain.js';
import { VirtqueueError } from './errors.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from './layout.js';
import {
  EVENT_SUPPRESS_ALIGN,
  EVENT_SUPPRESS_BYTES,
  FRESH_PACKED_STATE,
  PACKED_DESC_ALIGN,
  PACKED_MAX_QUEUE_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  availBit,
  decodePackedBase,
  descRingBytes,
  encodePackedBase,
  eventWantsNotification,
  linear,
  offWrap,
  usedBit,
  type PackedRingState,
} from './packed-layout.js';
import type { DeviceQueueOptions, DeviceQueueStats, VirtqueueDevice } from './queue.js';

const NONE = -1;

/**
 * Flag values for the hot paths (take, push): esbuild writes a file's own enum members
 * as literals, where a module constant costs a load and a check at each use, and
 * bytecode (see writeUsed). The same values as layout.ts and packed-layout.ts (checked
 * below).
 */
const enum F {
  NEXT = 1,
  WRITE = 2,
  INDIRECT = 4,
  AVAIL = 0x80,
  USED = 0x8000,
  AVAIL_USED = 0x8080,
}
if (F.NEXT !== VIRTQ_DESC_F_NEXT || F.WRITE !== VIRTQ_DESC_F_WRITE || F.INDIRECT !== VIRTQ_DESC_F_INDIRECT || F.AVAIL !== VIRTQ_DESC_F_AVAIL || F.USED !== VIRTQ_DESC_F_USED) {
  throw new Error('packed-device-queue: flag values out of step with the layout');
}

export class PackedVirtqueueDevice implements VirtqueueDevice {
  readonly layout = 'packed' as const;
  readonly name: string;
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly inOrder: boolean;
  readonly memory: GuestMemory;
  readonly stats: DeviceQueueStats = { chains: 0, refused: 0, notificationsSent: 0, notificationsSuppressed: 0 };
  onError: (err: VirtqueueError) => void;

  private readonly descU32: Uint32Array; // [addr_lo, addr_hi, len, id | flags << 16] per entry
  private readonly descU16: Uint16Array; // id at 8*i + 6, flags at 8*i + 7
  private readonly driverEvent: Uint32Array; // the driver's structure as one le32: desc | flags << 16
  private readonly deviceEvent: Uint16Array; // ours: [desc (off | wrap << 15), flags]

  private nextAvail: number;
  private availWrap: number;
  private nextUsed: number;
  private usedWrap: number;
  private usedFlags: number; // AVAIL and USED of a used descriptor in this lap: both = usedWrap (2.8.1)
  private signalledL: number; // linear used position at the last interrupt decision
  private pendingFirst = NONE; // position of the first used descriptor since flush(), flags held back
  private pendingFirstWord = 0; // its id | flags << 16, stored at once by flush()

  private readonly chains: (DescriptorChain | undefined)[]; // by buffer id
  private scratch = new DescriptorChain(4); // the chain being walked
  private readonly held: Uint8Array; // 1 while a buffer id is taken and not pushed
  private notificationsOff = false;
  private eventFlagsShadow = NONE;
  /** Whether the next head is read with Atomics.load (see "Memory ordering" at the top). */
  private acquire = true;

  // VIRTIO_F_IN_ORDER: ids in the order taken (refused ones with their descriptor count,
  // returned once everything taken before them is), and the run of completely used
  // chains waiting for one used descriptor.
  private readonly orderIds: Uint16Array;
  private readonly orderRefused: Uint16Array; // 0 for a held chain, else the refused chain's descriptors
  private orderHead = 0;
  private orderCount = 0;
  private batchDescs = 0;
  private batchId = 0;
  private batchLen = 0;
  /** IN_ORDER only: descriptors of chains taken or refused and not yet returned used (bounded by the ring). */
  private inFlightDescs = 0;

  /** Set when the ring can no longer be followed; take() then returns null until a reset. */
  broken: VirtqueueError | null = null;

  constructor(opts: DeviceQueueOptions) {
    const { name, size, memory } = opts;
    // Packed rings need not be a power of two in size (2.8.10.1); up to 2^15.
    if (!Number.isInteger(size) || size < 1 || size > PACKED_MAX_QUEUE_SIZE) {
      throw new VirtqueueError('ERR_VIRTQ_SETUP', name, `size ${size} is not between 1 and ${PACKED_MAX_QUEUE_SIZE}`);
    }
    let start: PackedRingState = FRESH_PACKED_STATE;
    if (opts.startIndex !== undefined) {
      try {
        start = decodePackedBase(opts.startIndex, size);
      } catch (e) {
        throw new VirtqueueError('ERR_VIRTQ_SETUP', name, (e as Error).message);
      }
    }
    const dr = mapRingPart(memory, name, opts.descAddr, descRingBytes(size), PACKED_DESC_ALIGN, 'descriptor ring');
    const ar = mapRingPart(memory, name, opts.availAddr, EVENT_SUPPRESS_BYTES, EVENT_SUPPRESS_ALIGN, 'driver event suppression');
    const ur = mapRingPart(memory, name, opts.usedAddr, EVENT_SUPPRESS_BYTES, EVENT_SUPPRESS_ALIGN, 'device event suppression');
    this.descU32 = new Uint32Array(dr.buffer, dr.byteOffset, 4 * size);
    this.descU16 = new Uint16Array(dr.buffer, dr.byteOffset, 8 * size);
    this.driverEvent = new Uint32Array(ar.buffer, ar.byteOffset, 1);
    this.deviceEvent = new Uint16Array(ur.buffer, ur.byteOffset, 2);
    this.name = name;
    this.index = opts.index;
    this.size = size;
    this.memory = memory;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.inOrder = opts.inOrder ?? false;
    this.onError = opts.onError ?? (() => {});
    this.nextAvail = start.availPos;
    this.availWrap = start.availWrap;
    this.nextUsed = start.usedPos;
    this.usedWrap = start.usedWrap;
    this.usedFlags = start.usedWrap !== 0 ? F.AVAIL_USED : 0;
    this.signalledL = linear(this.nextUsed, this.usedWrap, size);
    this.chains = new Array<DescriptorChain | undefined>(size).fill(undefined);
    this.held = new Uint8Array(size);
    this.orderIds = new Uint16Array(size);
    this.orderRefused = new Uint16Array(size);
    // Our event suppression structure may hold what an earlier user of this ring left:
    // start with notifications enabled (at our next position, with EVENT_IDX).
    this.enableNotifications();
  }

  /** vhost-user's vring base of a packed ring (see packed-layout.ts encodePackedBase). */
  get vringBase(): number {
    return encodePackedBase({ availPos: this.nextAvail, availWrap: this.availWrap, usedPos: this.nextUsed, usedWrap: this.usedWrap });
  }

  get heldChains(): number {
    let n = 0;
    for (let i = 0; i < this.size; i++) n += this.held[i]!;
    return n;
  }

  /** True when the descriptor at our position carries the AVAIL bit of this lap (take() checks the rest). */
  hasAvailable(): boolean {
    return !this.broken && availBit(Atomics.load(this.descU16, this.nextAvail * 8 + 7)) === this.availWrap;
  }

  /**
   * The next valid available chain, or null when there is none. Refused chains are
   * reported through onError, returned to the driver with length 0, and skipped.
   */
  take(): DescriptorChain | null {
    const size = this.size;
    const d32 = this.descU32;
    for (;;) {
      if (this.broken !== null) return null;
      const head = this.nextAvail;
      let wrap = this.availWrap;
      // See "Memory ordering" at the top: an acquiring load where a driver batch begins.
      // Either read takes id and flags at once, as the driver stores them; as int32
      // (| 0): with USED set the word is beyond a small integer and would be boxed.
      let word = this.acquire ? Atomics.load(d32, head * 4 + 3) | 0 : d32[head * 4 + 3]! | 0;
      let flags = word >>> 16;
      const bits = flags & F.AVAIL_USED;
      if (bits !== (wrap !== 0 ? F.AVAIL : F.USED)) {
        if (bits === (wrap !== 0 ? F.AVAIL_USED : 0)) this.wrongWrap(head, head, flags, wrap);
        this.acquire = true;
        return null; // not made available yet
      }
      this.acquire = false;
      // The buffer id belongs in the chain's last descriptor (2.8.6); drivers write it in
      // every one (Linux does, so do we), so the head's id names the chain object to walk
      // into, and a mismatch found at the end only costs a swap.
      const guess = word & 0xffff;
      let chain: DescriptorChain;
      if (guess < size && this.held[guess] === 0) chain = this.chains[guess] ?? (this.chains[guess] = new DescriptorChain(4));
      else chain = this.scratch;
      chain.clear(0);
      // One walk for every chain, one descriptor or several: one place that checks a
      // descriptor (V8 inlines it once, with addSegment, into take).
      let pos = head;
      let count = 1;
      let err: VirtqueueError | null = null;
      for (;;) {
        if (err === null) err = this.checkDescriptor(chain, pos, flags, count);
        if ((flags & F.NEXT) === 0) break;
        if (count === size) {
          this.endless(head);
          return null;
        }
        if (++pos === size) {
          pos = 0;
          wrap ^= 1;
        }
        count++;
        // Written before the head (2.8.6): visible once the head is.
        word = d32[pos * 4 + 3]! | 0;
        flags = word >>> 16;
        if ((flags & F.AVAIL_USED) !== (wrap !== 0 ? F.AVAIL : F.USED)) {
          this.wrongWrap(head, pos, flags, wrap);
          return null;
        }
      }
      const id = word & 0xffff; // the last descriptor's
      if (this.inOrder && this.inFlightDescs + count > size) {
        this.overcommitted(head, count);
        return null;
      }
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
      this.nextAvail = pos;
      this.availWrap = wrap;
      // (Walking into the head id's own object already found that id free and in range.)
      if (err !== null || ((id !== guess || chain === this.scratch) && (id >= size || this.held[id] === 1))) {
        this.refuseChain(err, head, id, count);
        continue;
      }
      if (chain !== this.chains[id]) this.adopt(chain, id, guess);
      chain.head = id;
      chain.ringDescriptors = count;
      this.held[id] = 1;
      if (this.inOrder) this.enqueueTaken(id, 0, count);
      this.stats.chains++;
      return chain;
    }
  }

  /**
   * The chain was walked into another object than its id's (the scratch one, or the
   * head id's): it becomes id's, and id's old one (not held) takes its place.
   */
  private adopt(chain: DescriptorChain, id: number, guess: number): void {
    const other = this.chains[id] ?? new DescriptorChain(4);
    this.chains[id] = chain;
    if (chain === this.scratch) this.scratch = other;
    else this.chains[guess] = other;
  }

  /** Checks the descriptor at `pos` (the chain's `count`-th) into `chain`; returns the fault or null. */
  private checkDescriptor(chain: DescriptorChain, pos: number, flags: number, count: number): VirtqueueError | null {
    const b = pos * 4;
    const d32 = this.descU32;
    if ((flags & F.INDIRECT) !== 0) return this.checkIndirect(chain, pos, flags, count);
    return addSegment(chain, this.memory, this.name, pos, d32[b + 1]!, d32[b]!, d32[b + 2]!, (flags & F.WRITE) !== 0, -1);
  }

  /** A descriptor with INDIRECT: negotiated, the chain's only one (2.8.19), its table checked. */
  private checkIndirect(chain: DescriptorChain, pos: number, flags: number, count: number): VirtqueueError | null {
    if (!this.indirect) return new VirtqueueError('ERR_VIRTQ_INDIRECT_NOT_NEGOTIATED', this.name, `descriptor ${pos} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`, pos);
    if (count > 1 || (flags & VIRTQ_DESC_F_NEXT) !== 0) {
      return new VirtqueueError('ERR_VIRTQ_INDIRECT_NEXT', this.name, `descriptor ${pos} is indirect but not its chain's only descriptor (2.8.19)`, pos);
    }
    const b = pos * 4;
    return this.walkIndirect(pos, this.descU32[b + 1]!, this.descU32[b]!, this.descU32[b + 2]!, chain);
  }

  /** An indirect table (2.8.7): its entries one after the other; only WRITE counts, but an entry that is itself indirect is refused. */
  private walkIndirect(descIdx: number, hi: number, lo: number, tableLen: number, chain: DescriptorChain): VirtqueueError | null {
    const table = locateIndirectTable(this.memory, this.name, descIdx, hi, lo, tableLen, this.size);
    if (table instanceof VirtqueueError) return table;
    const { view: v, base, entries } = table;
    for (let i = 0; i < entries; i++) {
      const o = base + i * 16;
      const flags = v.getUint16(o + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        return new VirtqueueError('ERR_VIRTQ_NESTED_INDIRECT', this.name, `indirect table of descriptor ${descIdx}: entry ${i} is itself indirect`, descIdx);
      }
      const e = addSegment(chain, this.memory, this.name, descIdx, v.getUint32(o + 4, true), v.getUint32(o, true), v.getUint32(o + 8, true), (flags & VIRTQ_DESC_F_WRITE) !== 0, i);
      if (e !== null) return e;
    }
    return null;
  }

  /**
   * With IN_ORDER, a chain that would make more descriptors outstanding than the ring has
   * (the driver made positions available again before they were used) breaks the ring:
   * every chain not returned waits in one queue of `size` entries and a run of them
   * shares one used descriptor, so neither could hold it (found by
   * fuzz/targets/virtqueue.ts). take() checks, this says so.
   */
  private overcommitted(head: number, count: number): void {
    this.markBroken(new VirtqueueError('ERR_VIRTQ_IN_ORDER', this.name, `the chain at descriptor ${head} makes ${this.inFlightDescs + count} descriptors outstanding, more than the ring's ${this.size} (positions made available again before they were used)`, head));
  }

  /** A descriptor where one available in this lap must be (see the top): the ring is broken. */
  private wrongWrap(head: number, pos: number, flags: number, wrap: number): void {
    const what =
      pos === head
        ? `descriptor ${head} has AVAIL and USED both ${wrap} (wrap counter ${wrap}): it is neither available nor used by us`
        : `the chain at descriptor ${head} continues to descriptor ${pos}, which is not available in this lap (AVAIL ${availBit(flags)}, USED ${usedBit(flags)}, wrap counter ${wrap}): the chain never ends`;
    this.markBroken(new VirtqueueError('ERR_VIRTQ_WRAP', this.name, what, pos));
  }

  private endless(head: number): void {
    this.markBroken(new VirtqueueError('ERR_VIRTQ_CHAIN_TOO_LONG', this.name, `the chain at descriptor ${head} does not end within the ring of ${this.size} descriptors`, head));
  }

  /** A chain whose end we found but which we cannot hand out: refused (see take()). */
  private refuseChain(err: VirtqueueError | null, head: number, id: number, descs: number): void {
    if (id < this.size && this.held[id] === 1) {
      // Offered again while we hold it (whatever else is wrong with it): refused without
      // a used descriptor (that would hand the driver the same id twice).
      this.stats.refused++;
      this.onError(new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `the chain at descriptor ${head} has buffer id ${id}, which the device still holds`, head));
      return;
    }
    // Here without a fault in its descriptors, the id is outside the ring.
    err ??= new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `the chain at descriptor ${head} has buffer id ${id}, outside the ${this.size} ids of the ring`, head);
    this.refuse(err, id, descs);
  }


  private markBroken(err: VirtqueueError): void {
    this.broken = err;
    this.stats.refused++;
    this.onError(err);
  }

  /** A bad chain whose end we found: returned used with length 0. */
  private refuse(err: VirtqueueError, id: number, descs: number): void {
    this.stats.refused++;
    if (!this.inOrder) this.writeUsed(id, 0, descs);
    else if (this.orderCount === 0) {
      this.inFlightDescs += descs;
      this.emitInOrder(id, 0, descs, false);
    } else this.enqueueTaken(id, descs, descs); // after the chains taken before it
    this.onError(err);
  }

  /**
   * Returns a taken chain to the driver with the number of bytes written into it.
   * Visible to the driver only after flush().
   */
  push(chain: DescriptorChain, writtenLength: number): void {
    const id = chain.head;
    // (An id outside the ring reads undefined from held.)
    if (this.held[id] !== 1 || this.chains[id] !== chain) this.notHeld(id);
    const len = writtenLength < chain.writableLength ? writtenLength : chain.writableLength;
    if (this.inOrder) {
      this.pushInOrder(chain, id, len);
      return;
    }
    this.held[id] = 0;
    this.writeUsed(id, len, chain.ringDescriptors);
  }

  /** push() of a chain we do not hold (kept out of push: see writeUsed). */
  private notHeld(id: number): never {
    throw new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `push of buffer id ${id}, which the device does not hold`, id);
  }

  /** push() with VIRTIO_F_IN_ORDER: in the order taken, runs of complete chains sharing one used descriptor. */
  private pushInOrder(chain: DescriptorChain, id: number, len: number): void {
    if (this.orderIds[this.orderHead] !== id || this.orderRefused[this.orderHead] !== 0) this.outOfOrder(id);
    this.dequeueTaken();
    this.held[id] = 0;
    this.emitInOrder(id, len, chain.ringDescriptors, len === chain.writableLength);
    // Refused chains taken after it go back now, in order.
    while (this.orderCount > 0 && this.orderRefused[this.orderHead] !== 0) {
      const rid = this.orderIds[this.orderHead]!;
      const descs = this.orderRefused[this.orderHead]!;
      this.dequeueTaken();
      this.emitInOrder(rid, 0, descs, false);
    }
  }

  /** A push against VIRTIO_F_IN_ORDER (kept out of pushInOrder). */
  private outOfOrder(id: number): never {
    throw new VirtqueueError('ERR_VIRTQ_IN_ORDER', this.name, `push of buffer id ${id} before buffer id ${this.orderIds[this.orderHead]}, taken earlier (VIRTIO_F_IN_ORDER)`, id);
  }

  /**
   * Writes a used descriptor at our next used position and skips the chain's descriptors
   * (2.8.6). With push(), the hot path of every device: kept small in bytecode (V8
   * inlines a method into its caller's loop only within a budget of bytecode per caller,
   * about 920 bytes in all, Node 20).
   */
  private writeUsed(id: number, len: number, descs: number): void {
    const pos = this.nextUsed;
    const d32 = this.descU32;
    d32[pos * 4 + 2] = len;
    // AVAIL = USED = the wrap counter (2.8.1), WRITE when something was written (2.8.3).
    const word = id | ((this.usedFlags | (len > 0 ? F.WRITE : 0)) << 16);
    if (this.pendingFirst < 0) {
      this.pendingFirst = pos;
      this.pendingFirstWord = word;
    } else {
      d32[pos * 4 + 3] = word;
    }
    const next = pos + descs;
    if (next < this.size) this.nextUsed = next;
    else this.wrapUsed(next);
  }

  /** The used position passes the end of the ring: the Device Ring Wrap Counter flips (2.8.1). */
  private wrapUsed(next: number): void {
    this.nextUsed = next - this.size;
    this.usedWrap ^= 1;
    this.usedFlags ^= F.AVAIL_USED;
  }

  // ---- VIRTIO_F_IN_ORDER

  /** IN_ORDER: a chain taken (refusedDescs 0) or refused, `descs` more descriptors outstanding. */
  private enqueueTaken(id: number, refusedDescs: number, descs: number): void {
    this.inFlightDescs += descs;
    let at = this.orderHead + this.orderCount++;
    if (at >= this.size) at -= this.size;
    this.orderIds[at] = id;
    this.orderRefused[at] = refusedDescs;
  }

  private dequeueTaken(): void {
    if (++this.orderHead === this.size) this.orderHead = 0;
    this.orderCount--;
  }

  /**
   * Adds a used chain to the run that shares one used descriptor (2.8.8: the driver
   * takes the chains before the one named as used completely). A chain not used
   * completely ends the run: its length is the one the descriptor carries.
   */
  private emitInOrder(id: number, len: number, descs: number, complete: boolean): void {
    this.batchDescs += descs;
    this.batchId = id;
    this.batchLen = len;
    if (!complete) this.closeBatch();
  }

  private closeBatch(): void {
    if (this.batchDescs === 0) return;
    this.inFlightDescs -= this.batchDescs;
    this.writeUsed(this.batchId, this.batchLen, this.batchDescs);
    this.batchDescs = 0;
  }

  /**
   * Makes pushed chains visible (one store: the batch's first used descriptor's flags)
   * and says whether the driver wants an interrupt (2.8.10: its event suppression
   * structure, with RING_EVENT_FLAGS_DESC the position it waits for).
   */
  flush(): boolean {
    if (this.inOrder) this.closeBatch();
    if (this.pendingFirst === NONE) return false;
    Atomics.store(this.descU32, this.pendingFirst * 4 + 3, this.pendingFirstWord);
    this.pendingFirst = NONE;
    const oldL = this.signalledL;
    const newL = linear(this.nextUsed, this.usedWrap, this.size);
    this.signalledL = newL;
    const notify = eventWantsNotification(Atomics.load(this.driverEvent, 0), this.eventIdx, newL, oldL, this.size);
    if (notify) this.stats.notificationsSent++;
    else this.stats.notificationsSuppressed++;
    return notify;
  }

  private setEventFlags(flags: number): void {
    if (this.eventFlagsShadow === flags) return;
    this.eventFlagsShadow = flags;
    Atomics.store(this.deviceEvent, 1, flags);
  }

  /** Asks the driver not to kick (a hint, 2.8.10): with EVENT_IDX the event position stops moving; without, DISABLE. */
  disableNotifications(): void {
    this.notificationsOff = true;
    if (!this.eventIdx) this.setEventFlags(RING_EVENT_FLAGS_DISABLE);
  }

  /**
   * Asks the driver to kick on the next available chain; returns true when chains
   * arrived meanwhile (the caller must take them, or a kick can be lost).
   */
  enableNotifications(): boolean {
    this.notificationsOff = false;
    if (this.eventIdx) {
      Atomics.store(this.deviceEvent, 0, offWrap(this.nextAvail, this.availWrap));
      this.setEventFlags(RING_EVENT_FLAGS_DESC);
    } else {
      this.setEventFlags(RING_EVENT_FLAGS_ENABLE);
    }
    return this.hasAvailable();
  }

  /** With EVENT_IDX, keep the kick event at our next position while notifications are enabled. */
  updateAvailEvent(): void {
    if (this.eventIdx && !this.notificationsOff) Atomics.store(this.deviceEvent, 0, offWrap(this.nextAvail, this.availWrap));
  }
}
