// The device half of a virtqueue, split (kernel/virtqueue/device-queue.ts, virtio 1.2
// 2.7) and packed (packed-device-queue.ts, 2.8), driven by a hostile driver: the input
// picks the layout and features, fills the rings and guest memory, and interleaves
// driver writes (raw, or chains offered the way a driver would) with the device's take,
// push, flush and notification calls.
//
// Invariants:
//  - nothing throws; refusals come through onError as VirtqueueErrors, one per
//    stats.refused, and stats.chains counts the chains taken;
//  - every chain handed out lies inside guest memory, segment by segment, with its
//    lengths adding up, and no id is handed out twice while held;
//  - a refused chain is returned used with length 0, a pushed one with its length
//    (checked in the used ring after flush, where the driver did not scribble);
//  - no byte outside the memory regions is written (guarded memory);
//  - the queue goes on: unless it is broken, a valid chain offered last is taken.
import { VirtqueueError } from '../../kernel/virtqueue/errors.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, availRingBytes, usedRingBytes } from '../../kernel/virtqueue/layout.js';
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, descRingBytes } from '../../kernel/virtqueue/packed-layout.js';
import type { DescriptorChain } from '../../kernel/virtqueue/descriptor-chain.js';
import type { RingLayout, VirtqueueDevice } from '../../kernel/virtqueue/queue.js';
import { createDeviceQueue } from '../../kernel/virtqueue/ring.js';
import { ByteReader } from '../engine/byte-reader.js';
import { GuardedMemory } from '../engine/guarded-memory.js';
import { InvariantError, check, type FuzzTarget } from '../engine/target.js';

const A = 0x10000; // region A: rings, then data
const A_SIZE = 0x10000;
const B = 0x30000; // region B, after a hole
const B_SIZE = 0x4000;
const DESC = A;
const AVAIL = A + 0x1000;
const USED = A + 0x2000;
const DATA = A + 0x3000;
const MAX_OPS = 300;


const mem = new GuardedMemory([
  { name: 'fuzz A', guestAddr: A, size: A_SIZE },
  { name: 'fuzz B', guestAddr: B, size: B_SIZE },
]);
const dv = (addr: number, len: number): DataView => {
  const b = mem.at(addr, len);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
};

/** A guest address the input chooses: mostly inside the data areas, sometimes anything. */
function address(r: ByteReader): number {
  switch (r.u8() & 3) {
    case 0:
      return DATA + (r.u16() % (A + A_SIZE - DATA));
    case 1:
      return B + (r.u16() % B_SIZE);
    case 2:
      return r.u32();
    default:
      return r.u32() + (r.u8() & 0x3f) * 0x100000000;
  }
}

function length(r: ByteReader): number {
  return (r.u8() & 1) === 0 ? r.u8() : r.u32();
}

interface Expected {
  /** Split: used ring slot; packed: descriptor position. */
  at: number;
  /** The chain's id, or -1 for a refused chain. */
  id: number;
  len: number;
  /** Packed: the used wrap counter when it was written. */
  wrap: number;
}

class Harness {
  readonly q: VirtqueueDevice;
  readonly layout: RingLayout;
  readonly size: number;
  readonly held = new Map<number, DescriptorChain>();
  readonly order: number[] = [];
  errors = 0;
  takes = 0;
  /** Used entries written since the last flush, in order (pushes and refusals). */
  pending: Expected[] = [];
  /** The driver wrote into the used part of the ring: the used entries cannot be checked until the next flush. */
  scribbled = false;
  /** Where the device writes its next used entry (usedPosition()). */
  private usedMark = 0;
  /** Ring positions the entries in `pending` span (when more than the ring, early ones were overwritten). */
  private pendingSpan = 0;

  constructor(r: ByteReader) {
    const cfg = r.u8();
    this.layout = (cfg & 1) !== 0 ? 'packed' : 'split';
    const sizeByte = r.u8();
    this.size = this.layout === 'split' ? 1 << sizeByte % 7 : 1 + (sizeByte % 64);
    const start = (cfg & 16) !== 0 ? (this.layout === 'split' ? r.u16() : r.u32()) : undefined;
    mem.reset();
    const image = r.chunk(true);
    mem.region(0).set(image.subarray(0, A_SIZE));
    this.q = createDeviceQueue(this.layout, {
      name: 'fuzz',
      index: 0,
      size: this.size,
      memory: mem.memory,
      descAddr: DESC,
      availAddr: AVAIL,
      usedAddr: USED,
      eventIdx: (cfg & 2) !== 0,
      indirect: (cfg & 4) !== 0,
      inOrder: (cfg & 8) !== 0,
      startIndex: start,
      onError: (e) => this.onError(e),
    });
    this.usedMark = this.usedPosition();
  }

  /**
   * Where the next used entry goes: split, the device's free-running used index (its
   * private shadow of used.idx: nothing public says it before flush); packed, position |
   * wrap << 15 from vringBase.
   */
  private usedPosition(): number {
    if (this.layout === 'split') return (this.q as unknown as { usedIdx: number }).usedIdx;
    return this.q.vringBase >>> 16;
  }

  private get checkUsed(): boolean {
    return this.layout === 'split' || !(this.q as { inOrder?: boolean }).inOrder;
  }

  private onError(e: VirtqueueError): void {
    check(e instanceof VirtqueueError, () => `onError got ${String(e)}`);
    check(e.code.startsWith('ERR_VIRTQ_') && e.message.includes('fuzz'), () => `refusal without code or queue name: ${e.code} ${e.message}`);
    this.errors++;
    this.noteUsedWrite(-1, 0);
  }

  /** Records the used entry just written, if the device wrote one (its used position moved). */
  private noteUsedWrite(id: number, len: number): void {
    const now = this.usedPosition();
    if (now === this.usedMark) return;
    if (this.layout === 'split') {
      this.pending.push({ at: this.usedMark & (this.size - 1), id, len, wrap: 0 });
      this.pendingSpan += (now - this.usedMark) & 0xffff;
    } else {
      const lin = (ow: number): number => ((ow >>> 15) & 1 ? ow & 0x7fff : (ow & 0x7fff) + this.size);
      this.pending.push({ at: this.usedMark & 0x7fff, id, len, wrap: this.usedMark >>> 15 });
      this.pendingSpan += (lin(now) - lin(this.usedMark) + 2 * this.size) % (2 * this.size);
    }
    this.usedMark = now;
  }

  take(): void {
    const c = this.q.take();
    if (c === null) {
      if (this.q.broken !== null) check(!this.q.hasAvailable(), () => 'a broken queue says chains are available');
      return;
    }
    this.takes++;
    check(c.head >= 0 && c.head < this.size, () => `chain id ${c.head} outside the ring of ${this.size}`);
    check(!this.held.has(c.head), () => `chain id ${c.head} handed out twice`);
    let readable = 0;
    let writable = 0;
    for (let i = 0; i < c.segmentCount; i++) {
      const addr = c.addrs[i]!;
      const len = c.lengths[i]!;
      check(mem.memory.contains(addr, len), () => `segment ${i} [0x${addr.toString(16)}, +${len}) of chain ${c.head} is outside guest memory`);
      const region = mem.memory.locate(addr, len);
      check(c.regions[i] === region && c.offsets[i] === addr - region.guestAddr, () => `segment ${i} of chain ${c.head}: region or offset does not match its address`);
      if (i < c.readableCount) readable += len;
      else writable += len;
    }
    check(readable === c.readableLength && writable === c.writableLength, () => `chain ${c.head}: lengths ${c.readableLength}/${c.writableLength}, segments add up to ${readable}/${writable}`);
    this.held.set(c.head, c);
    this.order.push(c.head);
  }

  push(newest: boolean, written: number): void {
    if (this.order.length === 0) return;
    // With IN_ORDER (packed), chains go back in the order taken (2.8.8).
    const inOrder = (this.q as { inOrder?: boolean }).inOrder === true;
    const id = newest && !inOrder ? this.order.pop()! : this.order.shift()!;
    const c = this.held.get(id)!;
    this.held.delete(id);
    const len = Math.min(written, c.writableLength);
    this.q.push(c, written);
    this.noteUsedWrite(id, len);
  }

  touch(c: DescriptorChain, r: ByteReader): void {
    const n = r.u8();
    const src = new Uint8Array(n).fill(0xc3);
    const wrote = c.write(r.u8(), src, 0, n);
    check(wrote <= n && wrote <= c.writableLength, () => `chain ${c.head}: wrote ${wrote} of ${n} bytes into ${c.writableLength} writable`);
    const dst = new Uint8Array(r.u8());
    const read = c.read(r.u8(), dst, 0, dst.length);
    check(read <= dst.length && read <= c.readableLength, () => `chain ${c.head}: read ${read} bytes of ${c.readableLength} readable`);
  }

  flush(): void {
    this.q.flush();
    if (!this.scribbled && this.checkUsed && this.pendingSpan <= this.size) this.verifyUsed();
    this.pending = [];
    this.pendingSpan = 0;
    this.scribbled = false;
  }

  /** After flush: the used entries written since the last one say what the device did. */
  private verifyUsed(): void {
    if (this.layout === 'split') {
      const usedIdx = dv(USED, 4).getUint16(2, true);
      // used.idx holds the input's image until the device first publishes.
      if (this.pending.length > 0) check(usedIdx === this.usedMark, () => `used.idx ${usedIdx} after flush, the device wrote up to ${this.usedMark}`);
      for (const e of this.pending) {
        const d = dv(USED + 4 + 8 * e.at, 8);
        const id = d.getUint32(0, true);
        const len = d.getUint32(4, true);
        check(len === e.len, () => `used ring slot ${e.at}: length ${len}, expected ${e.len}${e.id < 0 ? ' (a refused chain)' : ''}`);
        if (e.id >= 0) check(id === e.id, () => `used ring slot ${e.at}: id ${id}, expected ${e.id}`);
        else check(id < this.size, () => `used ring slot ${e.at}: refused id ${id} outside the ring`);
      }
      return;
    }
    for (const e of this.pending) {
      const d = dv(DESC + 16 * e.at, 16);
      const len = d.getUint32(8, true);
      const id = d.getUint16(12, true);
      const flags = d.getUint16(14, true);
      const bits = (flags & VIRTQ_DESC_F_AVAIL ? 1 : 0) + (flags & VIRTQ_DESC_F_USED ? 2 : 0);
      check(bits === (e.wrap ? 3 : 0), () => `used descriptor at ${e.at}: AVAIL/USED bits ${bits} for used wrap ${e.wrap}`);
      check(len === e.len, () => `used descriptor at ${e.at}: length ${len}, expected ${e.len}${e.id < 0 ? ' (a refused chain)' : ''}`);
      if (e.id >= 0) check(id === e.id, () => `used descriptor at ${e.at}: id ${id}, expected ${e.id}`);
    }
  }

  /** The driver writes guest memory: the ring, a table, data. */
  scribble(addr: number, bytes: Uint8Array): void {
    const region = addr >= B ? 1 : 0;
    const base = region === 0 ? A : B;
    const size = region === 0 ? A_SIZE : B_SIZE;
    const off = Math.min(addr - base, size);
    const n = Math.min(bytes.length, size - off);
    mem.region(region).set(bytes.subarray(0, n), off);
    const usedStart = this.layout === 'split' ? USED : DESC;
    const usedEnd = this.layout === 'split' ? USED + usedRingBytes(this.size) : DESC + descRingBytes(this.size);
    if (addr < usedEnd && addr + n > usedStart) this.scribbled = true;
  }

  /** Split: a descriptor table entry. Packed: a ring descriptor with raw flags. */
  writeDescriptor(i: number, addr: number, len: number, flags: number, nextOrId: number): void {
    const d = dv(DESC + 16 * i, 16);
    d.setUint32(0, addr >>> 0, true);
    d.setUint32(4, Math.floor(addr / 0x100000000), true);
    d.setUint32(8, len, true);
    d.setUint16(12, this.layout === 'split' ? flags : nextOrId, true);
    d.setUint16(14, this.layout === 'split' ? nextOrId : flags, true);
    if (this.layout === 'packed') this.scribbled = true;
  }

  /** Split: puts a head in the available ring and publishes it. */
  offerSplit(head: number): void {
    const a = dv(AVAIL, availRingBytes(this.size));
    const idx = a.getUint16(2, true);
    a.setUint16(4 + 2 * (idx & (this.size - 1)), head, true);
    a.setUint16(2, (idx + 1) & 0xffff, true);
  }

  /** Packed: a descriptor `k` positions after the device's next one, flagged available in that lap. */
  offerPacked(k: number, addr: number, len: number, flags: number, id: number): void {
    const base = this.q.vringBase;
    let pos = (base & 0x7fff) + k;
    let wrap = (base >>> 15) & 1;
    while (pos >= this.size) {
      pos -= this.size;
      wrap ^= 1;
    }
    const bits = wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
    this.writeDescriptor(pos, addr, len, (flags & (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT)) | bits, id);
  }

  /** The queue goes on: a valid one-descriptor chain offered now is taken, pushed and returned used. */
  witness(): void {
    // First what the driver left (each checked as it comes).
    for (let i = 0; i <= this.size && this.q.hasAvailable(); i++) this.take();
    this.take();
    if (this.q.broken !== null) return;
    if ((this.q as { inOrder?: boolean }).inOrder) {
      // IN_ORDER: a driver offers more only when the ring has room (2.8.8); return everything first.
      while (this.order.length > 0) this.push(false, 0);
      this.flush();
    }
    let id = -1;
    for (let i = 0; i < this.size && id < 0; i++) if (!this.held.has(i)) id = i;
    if (id < 0) return; // the device holds every id: nothing can be offered
    const addr = B + 0x100;
    if (this.layout === 'split') {
      this.writeDescriptor(id, addr, 64, VIRTQ_DESC_F_WRITE, 0);
      this.offerSplit(id);
    } else {
      this.offerPacked(0, addr, 64, VIRTQ_DESC_F_WRITE, id);
    }
    const before = this.takes;
    this.take();
    check(this.takes === before + 1, () => `the queue did not go on: a valid chain (id ${id}) offered after the input was not taken${this.q.broken ? ` (broken: ${this.q.broken.message})` : ''}`);
    const c = this.held.get(id);
    check(c !== undefined && c.segmentCount === 1 && c.addrs[0] === addr && c.writableLength === 64, () => `the witness chain came back as ${c ? `id ${c.head}, ${c.segmentCount} segments, ${c.writableLength} writable bytes` : 'another id'}`);
    this.push(false, 10);
    this.push(true, 10);
  }
}

function run(input: Uint8Array): void {
  const r = new ByteReader(input);
  let h: Harness;
  try {
    h = new Harness(r);
  } catch (e) {
    // Only a bad start state (vhost-user's vring base) may refuse the setup.
    if (e instanceof VirtqueueError && e.code === 'ERR_VIRTQ_SETUP') return;
    throw e;
  }
  for (let ops = 0; ops < MAX_OPS && !r.exhausted; ops++) {
    switch (r.u8() % 14) {
      case 0:
      case 1:
      case 2:
        h.take();
        break;
      case 3:
        h.push(false, length(r));
        break;
      case 4:
        h.push(true, length(r));
        break;
      case 5:
        h.flush();
        break;
      case 6:
        h.q.enableNotifications();
        break;
      case 7:
        h.q.disableNotifications();
        break;
      case 8:
        h.q.updateAvailEvent();
        h.q.hasAvailable();
        break;
      case 9:
        h.scribble(r.bool() ? B + r.u16() : A + r.u16(), r.chunk());
        break;
      case 10:
        if (h.layout === 'split') h.offerSplit(r.u16() % (h.size + 2));
        else h.offerPacked(r.u8() % (h.size + 1), address(r), length(r), r.u8(), r.u16() % (h.size + 2));
        break;
      case 11:
        h.writeDescriptor(r.u16() % h.size, address(r), length(r), r.u8() & 0x87 | (r.u8() & 0x80) << 8, r.u16() % (h.size + 2));
        break;
      case 12: {
        const c = h.held.get(h.order[r.u8() % Math.max(1, h.order.length)] ?? -1);
        if (c) h.touch(c, r);
        break;
      }
      default: {
        // An indirect table in the data area: a few entries.
        const at = DATA + 16 * (r.u8() % 64);
        const n = 1 + (r.u8() % 8);
        for (let i = 0; i < n; i++) {
          const e = dv(at + 16 * i, 16);
          const a = address(r);
          e.setUint32(0, a >>> 0, true);
          e.setUint32(4, Math.floor(a / 0x100000000), true);
          e.setUint32(8, length(r), true);
          e.setUint16(12, r.u8() & 7, true);
          e.setUint16(14, r.u8() % (n + 1), true);
        }
      }
    }
  }
  h.flush();
  check(h.q.stats.refused === h.errors, () => `stats.refused ${h.q.stats.refused}, onError called ${h.errors} times`);
  check(h.q.stats.chains === h.takes, () => `stats.chains ${h.q.stats.chains}, chains taken ${h.takes}`);
  check(h.q.heldChains === h.held.size, () => `heldChains ${h.q.heldChains}, held by the harness ${h.held.size}`);
  h.witness();
  h.flush();
  check(h.q.stats.refused === h.errors, () => `after the witness: stats.refused ${h.q.stats.refused}, onError called ${h.errors} times`);
  mem.checkGuards();
}

/** Seeds: one chain offered and taken on each layout; an indirect chain; a loop. */
function seeds(): Uint8Array[] {
  const u16 = (v: number): number[] => [v & 0xff, v >> 8];
  const u32 = (v: number): number[] => [...u16(v & 0xffff), ...u16(v >>> 16)];
  const split = [0b0110, 3, ...u16(0), /* write desc 0 */ 11, ...u16(0), 1, ...u16(0x100), 0, 16, 2, 0, ...u16(0), /* offer 0 */ 10, ...u16(0), 0, 3, 0, 64, 5];
  const splitIndirect = [0b0110, 3, ...u16(0), 13, 0, 1, 1, ...u16(0), 0, 32, 2, 0, 11, ...u16(1), 0, ...u16(0), 0, 32, 4, 0, ...u16(0), 10, ...u16(1), 0, 3, 0, 8, 5];
  const packed = [0b0111, 7, ...u16(0), 10, 0, 1, ...u16(0x10), 0, 64, 2, ...u16(3), 0, 4, 0, 64, 5];
  const packedChain = [0b0111, 7, ...u16(0), 10, 0, 0, ...u16(0), 0, 16, 1, ...u16(2), 10, 1, 1, ...u16(8), 0, 16, 2, ...u16(2), 0, 3, 0, 16, 5];
  const packedStart = [0b10111, 7, ...u32(0x80038003), ...u16(0), 10, 0, 1, ...u16(0), 0, 8, 2, ...u16(1), 0, 3, 0, 8, 5];
  const splitWrap = [0b10010, 2, ...u16(0xfffe), ...u16(0), 11, ...u16(0), 1, ...u16(0), 0, 8, 2, 0, ...u16(0), 10, ...u16(0), 0, 3, 0, 8, 10, ...u16(0), 0, 3, 0, 8, 10, ...u16(0), 0, 5];
  return [split, splitIndirect, packed, packedChain, packedStart, splitWrap].map((a) => new Uint8Array(a));
}

export const virtqueueTarget: FuzzTarget = {
  name: 'virtqueue',
  description: 'device half of the split and packed virtqueue: ring and descriptor contents from a hostile driver (2.7, 2.8)',
  focus: ['kernel/virtqueue/device-queue.ts', 'kernel/virtqueue/packed-device-queue.ts', 'kernel/virtqueue/descriptor-chain.ts', 'kernel/memory/guest-memory.ts'],
  maxInputBytes: 4096,
  dictionary: [
    new Uint8Array([0x00, 0x00, 0x01, 0x00]), // le32 0x10000 (region A)
    new Uint8Array([0x00, 0x30, 0x01, 0x00]), // le32 0x13000 (data)
    new Uint8Array([0x00, 0x00, 0x03, 0x00]), // le32 0x30000 (region B)
    new Uint8Array([0x00, 0x80, 0x00, 0x80]), // a fresh packed vring base
    new Uint8Array([0x80]), // AVAIL
    new Uint8Array([0x00, 0x80]), // le16 USED
    new Uint8Array([0x80, 0x80]),
  ],
  seeds,
  run,
};

export { InvariantError };
