// A driver half and a device half of one virtqueue, split or packed, over the same
// SharedArrayBuffer, in one thread: for ring-level tests and level-0 benchmarks. The
// raw helpers write the rings directly (bypassing the driver's bookkeeping), in the
// layout of the pair, for hostile-input tests.
import { DmaArena } from '../../kernel/memory/dma.js';
import { GuestMemory } from '../../kernel/memory/guest-memory.js';
import type { VirtqueueError } from '../../kernel/virtqueue/errors.js';
import { VIRTQ_DESC_F_NEXT } from '../../kernel/virtqueue/layout.js';
import { availFlags } from '../../kernel/virtqueue/packed-layout.js';
import type { RingLayout, VirtqueueDevice, VirtqueueDriver } from '../../kernel/virtqueue/queue.js';
import { createDeviceQueue, createDriverQueue, ringPartLayout } from '../../kernel/virtqueue/ring.js';

export const BASE = 0x40000000;
export const LAYOUTS: readonly RingLayout[] = ['split', 'packed'];

export interface RingPairOptions {
  layout?: RingLayout;
  eventIdx?: boolean;
  indirect?: boolean;
  /** VIRTIO_F_IN_ORDER on both halves (packed only). */
  inOrder?: boolean;
  memoryBytes?: number;
}

export interface RingPair<T> {
  layout: RingLayout;
  sab: SharedArrayBuffer;
  arena: DmaArena;
  memory: GuestMemory;
  driver: VirtqueueDriver<T>;
  device: VirtqueueDevice;
  errors: VirtqueueError[];
  /** Split: raw descriptor-table writes. */
  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void;
  /** Split: puts `head` in the available ring and publishes it (bypassing the driver's bookkeeping). */
  offerRaw(head: number): void;
  /** Split: writes a raw avail.idx. */
  setAvailIdx(idx: number): void;
  /** Packed: writes ring descriptor `i` as it is (flags included: the caller chooses the AVAIL/USED bits). */
  writePacked(i: number, addr: number, len: number, id: number, flags: number): void;
  /**
   * Packed: makes `descs` available as one chain at the driver's next position (NEXT on
   * all but the last, AVAIL/USED for its wrap counter, the head's flags last), bypassing
   * the driver half. Returns the position after it.
   */
  offerPacked(at: number, wrap: number, descs: ReadonlyArray<{ addr: number; len: number; flags?: number; id: number }>): number;
  /** Allocates a buffer in guest memory and returns [address, bytes]. */
  buffer(size: number): [number, Uint8Array];
}

export function makeRingPair<T = number>(size: number, opts: RingPairOptions = {}): RingPair<T> {
  const layout = opts.layout ?? 'split';
  const sab = new SharedArrayBuffer(opts.memoryBytes ?? 1 << 20);
  const arena = new DmaArena(sab, { base: BASE });
  const memory = GuestMemory.fromSharedArrayBuffer(sab, BASE, 'test memory');
  const parts = ringPartLayout(layout, size);
  const desc = arena.allocate(parts.descBytes, 16);
  const avail = arena.allocate(parts.availBytes, 64);
  const used = arena.allocate(parts.usedBytes, 64);
  const eventIdx = opts.eventIdx ?? true;
  const inOrder = opts.inOrder ?? false;
  const driver = createDriverQueue<T>(layout, {
    name: 'test queue',
    index: 0,
    size,
    eventIdx,
    inOrder,
    desc: { bytes: desc, addr: arena.addressOf(desc) },
    avail: { bytes: avail, addr: arena.addressOf(avail) },
    used: { bytes: used, addr: arena.addressOf(used) },
  });
  const errors: VirtqueueError[] = [];
  const device = createDeviceQueue(layout, {
    name: 'test queue',
    index: 0,
    size,
    memory,
    descAddr: arena.addressOf(desc),
    availAddr: arena.addressOf(avail),
    usedAddr: arena.addressOf(used),
    eventIdx,
    indirect: opts.indirect ?? true,
    inOrder,
    onError: (e) => errors.push(e),
  });
  const dv = new DataView(sab, desc.byteOffset, desc.byteLength);
  const av = new DataView(sab, avail.byteOffset, avail.byteLength);
  const writeAddrLen = (i: number, addr: number, len: number): void => {
    dv.setUint32(i * 16, addr % 0x100000000, true);
    dv.setUint32(i * 16 + 4, Math.floor(addr / 0x100000000), true);
    dv.setUint32(i * 16 + 8, len, true);
  };
  const writePacked = (i: number, addr: number, len: number, id: number, flags: number): void => {
    writeAddrLen(i, addr, len);
    dv.setUint16(i * 16 + 12, id, true);
    dv.setUint16(i * 16 + 14, flags, true);
  };
  return {
    layout,
    sab,
    arena,
    memory,
    driver,
    device,
    errors,
    writeDesc(i, addr, len, flags, next) {
      writeAddrLen(i, addr, len);
      dv.setUint16(i * 16 + 12, flags, true);
      dv.setUint16(i * 16 + 14, next, true);
    },
    offerRaw(head) {
      const rawIdx = av.getUint16(2, true);
      av.setUint16(4 + 2 * (rawIdx % size), head, true);
      av.setUint16(2, (rawIdx + 1) & 0xffff, true);
    },
    setAvailIdx(idx) {
      av.setUint16(2, idx & 0xffff, true);
    },
    writePacked,
    offerPacked(at, wrap, descs) {
      let pos = at;
      let w = wrap;
      let headFlags = 0;
      descs.forEach((d, i) => {
        const flags = (d.flags ?? 0) | (i + 1 < descs.length ? VIRTQ_DESC_F_NEXT : 0) | availFlags(w);
        if (i === 0) {
          // The head's flags last (2.8.6): until then it keeps what it had.
          writeAddrLen(pos, d.addr, d.len);
          dv.setUint16(pos * 16 + 12, d.id, true);
          headFlags = flags;
        } else {
          writePacked(pos, d.addr, d.len, d.id, flags);
        }
        if (++pos === size) {
          pos = 0;
          w ^= 1;
        }
      });
      dv.setUint16(at * 16 + 14, headFlags, true);
      return pos;
    },
    buffer(n) {
      const b = arena.allocate(n, 16);
      return [arena.addressOf(b), b];
    },
  };
}
