// A driver half and a device half of one split virtqueue over the same
// SharedArrayBuffer, in one thread: for ring-level tests and level-0 benchmarks.
import { DmaArena } from '../../kernel/memory/dma.js';
import { GuestMemory } from '../../kernel/memory/guest-memory.js';
import { VirtqueueDevice } from '../../kernel/virtqueue/device-queue.js';
import { VirtqueueDriver } from '../../kernel/virtqueue/driver-queue.js';
import type { VirtqueueError } from '../../kernel/virtqueue/errors.js';
import { availRingBytes, descTableBytes, usedRingBytes } from '../../kernel/virtqueue/layout.js';

export const BASE = 0x40000000;

export interface RingPair<T> {
  sab: SharedArrayBuffer;
  arena: DmaArena;
  memory: GuestMemory;
  driver: VirtqueueDriver<T>;
  device: VirtqueueDevice;
  errors: VirtqueueError[];
  /** Raw descriptor writes, for hostile-input tests. */
  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void;
  /** Puts `head` in the available ring and publishes it (bypassing the driver's bookkeeping). */
  offerRaw(head: number): void;
  /** Writes a raw avail.idx. */
  setAvailIdx(idx: number): void;
  /** Allocates a buffer in guest memory and returns [address, bytes]. */
  buffer(size: number): [number, Uint8Array];
}

export function makeRingPair<T = number>(size: number, opts: { eventIdx?: boolean; indirect?: boolean; memoryBytes?: number } = {}): RingPair<T> {
  const sab = new SharedArrayBuffer(opts.memoryBytes ?? 1 << 20);
  const arena = new DmaArena(sab, { base: BASE });
  const memory = GuestMemory.fromSharedArrayBuffer(sab, BASE, 'test memory');
  const desc = arena.allocate(descTableBytes(size), 16);
  const avail = arena.allocate(availRingBytes(size), 64);
  const used = arena.allocate(usedRingBytes(size), 64);
  const eventIdx = opts.eventIdx ?? true;
  const driver = new VirtqueueDriver<T>({
    name: 'test queue',
    index: 0,
    size,
    eventIdx,
    desc: { bytes: desc, addr: arena.addressOf(desc) },
    avail: { bytes: avail, addr: arena.addressOf(avail) },
    used: { bytes: used, addr: arena.addressOf(used) },
  });
  const errors: VirtqueueError[] = [];
  const device = new VirtqueueDevice({
    name: 'test queue',
    index: 0,
    size,
    memory,
    descAddr: arena.addressOf(desc),
    availAddr: arena.addressOf(avail),
    usedAddr: arena.addressOf(used),
    eventIdx,
    indirect: opts.indirect ?? true,
    onError: (e) => errors.push(e),
  });
  const dv = new DataView(sab, desc.byteOffset, desc.byteLength);
  const av = new DataView(sab, avail.byteOffset, avail.byteLength);
  let rawIdx = 0;
  return {
    sab,
    arena,
    memory,
    driver,
    device,
    errors,
    writeDesc(i, addr, len, flags, next) {
      dv.setUint32(i * 16, addr % 0x100000000, true);
      dv.setUint32(i * 16 + 4, Math.floor(addr / 0x100000000), true);
      dv.setUint32(i * 16 + 8, len, true);
      dv.setUint16(i * 16 + 12, flags, true);
      dv.setUint16(i * 16 + 14, next, true);
    },
    offerRaw(head) {
      rawIdx = av.getUint16(2, true);
      av.setUint16(4 + 2 * (rawIdx % size), head, true);
      av.setUint16(2, (rawIdx + 1) & 0xffff, true);
    },
    setAvailIdx(idx) {
      av.setUint16(2, idx & 0xffff, true);
    },
    buffer(n) {
      const b = arena.allocate(n, 16);
      return [arena.addressOf(b), b];
    },
  };
}
