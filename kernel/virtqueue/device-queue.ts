// The device half of a split virtqueue (virtio 1.2, 2.7): take available chains,
// walk their descriptors (direct and indirect), return them in the used ring, and
// decide when the driver wants an interrupt.
//
// Everything in guest memory is hostile. Each descriptor is read once (a snapshot),
// every index, address, length and flag is checked, and a bad chain is refused with a
// VirtqueueError naming the queue and descriptor: the chain is returned to the driver
// with a written length of 0 (when its head is a valid index) and the queue goes on
// with the next one. Only an impossible avail.idx marks the whole queue broken, since
// from then on no entry of the ring can be trusted (2.7.13.3.1: the device SHOULD then
// set DEVICE_NEEDS_RESET; the transport decides that).
import type { GuestMemory } from '../memory/guest-memory.js';
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
import { DescriptorChain, addSegment, locateIndirectTable, mapRingPart } from './descriptor-chain.js';
import { VirtqueueError } from './errors.js';
import type { DeviceQueueOptions, DeviceQueueStats, VirtqueueDevice } from './queue.js';

export { DescriptorChain } from './descriptor-chain.js';
export type { DeviceQueueOptions, DeviceQueueStats, VirtqueueDevice } from './queue.js';

export class SplitVirtqueueDevice implements VirtqueueDevice {
  readonly layout = 'split' as const;
  readonly name: string;
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly memory: GuestMemory;
  readonly stats: DeviceQueueStats = { chains: 0, refused: 0, notificationsSent: 0, notificationsSuppressed: 0 };
  onError: (err: VirtqueueError) => void;

  private readonly descU32: Uint32Array;
  private readonly availU16: Uint16Array;
  private readonly usedU16: Uint16Array;
  private readonly usedU32: Uint32Array;
  private lastAvailIdx: number;
  private usedIdx: number; // shadow of used.idx, published by flush()
  private signalledUsedIdx: number; // used.idx at the last interrupt decision
  private readonly chains: (DescriptorChain | undefined)[];
  private readonly outstanding: Uint8Array; // 1 while a head is taken and not pushed
  private notificationsOff = false;

  /** Set when avail.idx became impossible; take() then returns null until a reset. */
  broken: VirtqueueError | null = null;

  constructor(opts: DeviceQueueOptions) {
    const { name, size, memory } = opts;
    try {
      checkQueueSize(size, name);
    } catch (e) {
      throw new VirtqueueError('ERR_VIRTQ_SETUP', name, (e as Error).message);
    }
    const dr = mapRingPart(memory, name, opts.descAddr, descTableBytes(size), DESC_ALIGN, 'descriptor table');
    const ar = mapRingPart(memory, name, opts.availAddr, availRingBytes(size), AVAIL_ALIGN, 'available ring');
    const ur = mapRingPart(memory, name, opts.usedAddr, usedRingBytes(size), USED_ALIGN, 'used ring');
    this.descU32 = new Uint32Array(dr.buffer, dr.byteOffset, 4 * size);
    this.availU16 = new Uint16Array(ar.buffer, ar.byteOffset, 3 + size);
    this.usedU16 = new Uint16Array(ur.buffer, ur.byteOffset, 3 + 4 * size);
    this.usedU32 = new Uint32Array(ur.buffer, ur.byteOffset, 1 + 2 * size);
    this.name = name;
    this.index = opts.index;
    this.size = size;
    this.memory = memory;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.onError = opts.onError ?? (() => {});
    this.lastAvailIdx = (opts.startIndex ?? 0) & 0xffff;
    this.usedIdx = this.signalledUsedIdx = this.lastAvailIdx;
    this.chains = new Array<DescriptorChain | undefined>(size).fill(undefined);
    this.outstanding = new Uint8Array(size);
  }

  /** The next avail index to be taken (vhost-user GET_VRING_BASE). */
  get nextAvailIndex(): number {
    return this.lastAvailIdx;
  }

  /** vhost-user's vring base of a split ring: the next avail index. */
  get vringBase(): number {
    return this.lastAvailIdx;
  }

  /** True when the driver has made chains available that were not taken yet. */
  hasAvailable(): boolean {
    return !this.broken && Atomics.load(this.availU16, 1) !== this.lastAvailIdx;
  }

  /**
   * The next valid available chain, or null when there is none. Refused chains are
   * reported through onError, returned to the driver with length 0, and skipped.
   */
  take(): DescriptorChain | null {
    for (;;) {
      if (this.broken) return null;
      const availIdx = Atomics.load(this.availU16, 1);
      if (availIdx === this.lastAvailIdx) return null;
      const ahead = (availIdx - this.lastAvailIdx) & 0xffff;
      if (ahead > this.size) {
        this.broken = new VirtqueueError('ERR_VIRTQ_AVAIL_INDEX', this.name, `avail.idx ${availIdx} is ${ahead} entries ahead of ${this.lastAvailIdx}, more than the queue size ${this.size}`);
        this.stats.refused++;
        this.onError(this.broken);
        return null;
      }
      const head = this.availU16[2 + (this.lastAvailIdx & (this.size - 1))]!;
      this.lastAvailIdx = (this.lastAvailIdx + 1) & 0xffff;
      if (head >= this.size) {
        this.refuse(new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `available ring entry names head ${head}, outside the table of ${this.size}`, head), -1);
        continue;
      }
      if (this.outstanding[head] === 1) {
        // The driver offered a head the device still holds: refuse without pushing it
        // again (that would hand the driver the same chain twice).
        this.refuse(new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `head ${head} offered again while the device still holds it`, head), -1);
        continue;
      }
      let chain = this.chains[head];
      if (chain === undefined) chain = this.chains[head] = new DescriptorChain(4);
      const err = this.walk(head, chain);
      if (err !== null) {
        this.refuse(err, head);
        continue;
      }
      this.outstanding[head] = 1;
      this.stats.chains++;
      return chain;
    }
  }

  private refuse(err: VirtqueueError, head: number): void {
    this.stats.refused++;
    if (head >= 0) this.pushHead(head, 0);
    this.onError(err);
  }

  /** Walks and checks the chain at `head` into `chain`; returns the first fault or null. */
  private walk(head: number, chain: DescriptorChain): VirtqueueError | null {
    chain.clear(head);
    const size = this.size;
    const d = this.descU32;
    let idx = head;
    let count = 0;
    for (;;) {
      if (++count > size) {
        return new VirtqueueError('ERR_VIRTQ_CHAIN_TOO_LONG', this.name, `chain at head ${head} is longer than the queue size ${size} (a loop?)`, idx);
      }
      const b = idx * 4;
      const lo = d[b]!;
      const hi = d[b + 1]!;
      const len = d[b + 2]!;
      const fn = d[b + 3]!;
      const flags = fn & 0xffff;
      const next = fn >>> 16;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.indirect) return new VirtqueueError('ERR_VIRTQ_INDIRECT_NOT_NEGOTIATED', this.name, `descriptor ${idx} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`, idx);
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) return new VirtqueueError('ERR_VIRTQ_INDIRECT_NEXT', this.name, `descriptor ${idx} has both INDIRECT and NEXT set`, idx);
        return this.walkIndirect(idx, hi, lo, len, chain, count);
      }
      const e = addSegment(chain, this.memory, this.name, idx, hi, lo, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, -1);
      if (e !== null) return e;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return null;
      if (next >= size) return new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `descriptor ${idx} links to next ${next}, outside the table of ${size}`, idx);
      idx = next;
    }
  }

  private walkIndirect(descIdx: number, hi: number, lo: number, tableLen: number, chain: DescriptorChain, countSoFar: number): VirtqueueError | null {
    const table = locateIndirectTable(this.memory, this.name, descIdx, hi, lo, tableLen, this.size - countSoFar + 1);
    if (table instanceof VirtqueueError) return table;
    const { view: v, base, entries } = table;
    let i = 0;
    let walked = 0;
    for (;;) {
      if (++walked > entries) {
        return new VirtqueueError('ERR_VIRTQ_CHAIN_TOO_LONG', this.name, `indirect table of descriptor ${descIdx} loops`, descIdx);
      }
      const o = base + i * 16;
      const elo = v.getUint32(o, true);
      const ehi = v.getUint32(o + 4, true);
      const len = v.getUint32(o + 8, true);
      const flags = v.getUint16(o + 12, true);
      const next = v.getUint16(o + 14, true);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        return new VirtqueueError('ERR_VIRTQ_NESTED_INDIRECT', this.name, `indirect table of descriptor ${descIdx}: entry ${i} is itself indirect`, descIdx);
      }
      const e = addSegment(chain, this.memory, this.name, descIdx, ehi, elo, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, i);
      if (e !== null) return e;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) return null;
      if (next >= entries) {
        return new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `indirect table of descriptor ${descIdx}: entry ${i} links to ${next}, outside its ${entries} entries`, descIdx);
      }
      i = next;
    }
  }

  /**
   * Returns a taken chain to the driver with the number of bytes written into it.
   * Visible to the driver only after flush().
   */
  push(chain: DescriptorChain, writtenLength: number): void {
    const head = chain.head;
    if (this.outstanding[head] !== 1) throw new VirtqueueError('ERR_VIRTQ_DESC_INDEX', this.name, `push of head ${head}, which the device does not hold`, head);
    this.outstanding[head] = 0;
    this.pushHead(head, Math.min(writtenLength, chain.writableLength));
  }

  private pushHead(head: number, len: number): void {
    const slot = this.usedIdx & (this.size - 1);
    this.usedU32[1 + 2 * slot] = head;
    this.usedU32[2 + 2 * slot] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  /**
   * Publishes pushed entries (one store of used.idx) and says whether the driver wants
   * an interrupt (2.7.10: vring_need_event on used_event with EVENT_IDX, otherwise the
   * available ring's NO_INTERRUPT flag).
   */
  flush(): boolean {
    const newIdx = this.usedIdx;
    const oldIdx = this.signalledUsedIdx;
    if (newIdx === oldIdx) return false;
    Atomics.store(this.usedU16, 1, newIdx);
    this.signalledUsedIdx = newIdx;
    let notify: boolean;
    if (this.eventIdx) notify = vringNeedEvent(Atomics.load(this.availU16, 2 + this.size), newIdx, oldIdx);
    else notify = (Atomics.load(this.availU16, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    if (notify) this.stats.notificationsSent++;
    else this.stats.notificationsSuppressed++;
    return notify;
  }

  /** Asks the driver not to kick (a hint, 2.7.10). */
  disableNotifications(): void {
    this.notificationsOff = true;
    if (!this.eventIdx) Atomics.store(this.usedU16, 0, VIRTQ_USED_F_NO_NOTIFY);
  }

  /**
   * Asks the driver to kick on the next available chain; returns true when chains
   * arrived meanwhile (the caller must take them, or a kick can be lost).
   */
  enableNotifications(): boolean {
    this.notificationsOff = false;
    if (this.eventIdx) Atomics.store(this.usedU16, 2 + 4 * this.size, this.lastAvailIdx);
    else Atomics.store(this.usedU16, 0, 0);
    return this.hasAvailable();
  }

  /** With EVENT_IDX, keep avail_event current while notifications are enabled. */
  updateAvailEvent(): void {
    if (this.eventIdx && !this.notificationsOff) Atomics.store(this.usedU16, 2 + 4 * this.size, this.lastAvailIdx);
  }

  /** Chains taken and not yet pushed. */
  get heldChains(): number {
    let n = 0;
    for (let i = 0; i < this.size; i++) n += this.outstanding[i]!;
    return n;
  }
}
