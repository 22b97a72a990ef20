// The device half against hostile descriptors: one test per case, split rings first,
// then packed ones. Each bad chain is refused with an error naming the queue and the
// descriptor, the driver gets it back (length 0) when its head or id is valid, and the
// queue keeps serving valid chains; what the device cannot follow marks the queue
// broken. Also the driver half against a hostile device.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../kernel/virtqueue/layout.js';
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from '../kernel/virtqueue/packed-layout.js';
import type { VirtqueueErrorCode } from '../kernel/virtqueue/errors.js';
import { BASE, makeRingPair, type RingPair } from './support/ring-pair.js';

const SIZE = 8;
const OUTSIDE = BASE + (1 << 20) + 4096; // past the end of the 1 MiB test memory

/** Offers a raw chain at `head` and expects it refused with `code`, then checks a valid chain still works. */
function expectRefused(t: ExecutionContext, p: RingPair<number>, head: number, code: VirtqueueErrorCode, opts: { headReturned?: boolean; descriptor?: number } = {}): void {
  p.offerRaw(head);
  t.is(p.device.take(), null, 'the bad chain is not handed to the device model');
  t.is(p.errors.length, 1, 'one error reported');
  const err = p.errors[0]!;
  t.is(err.code, code);
  t.regex(err.message, /^test queue: /, 'the message names the queue');
  if (opts.descriptor !== undefined) t.is(err.descriptor, opts.descriptor);
  t.regex(err.message, /descriptor|head|entry/);
  // The refused head comes back in the used ring with length 0.
  p.device.flush();
  const usedIdx = new DataView(p.driver.used.bytes.buffer, p.driver.used.bytes.byteOffset).getUint16(2, true);
  t.is(usedIdx, opts.headReturned === false ? 0 : 1, 'refused head returned to the driver');
  // The queue keeps working: a valid chain through a fresh ring pair state.
  const [addr, bytes] = p.buffer(32);
  bytes.fill(0x5a, 0, 16);
  p.writeDesc(6, addr, 16, VIRTQ_DESC_F_NEXT, 7);
  p.writeDesc(7, addr + 16, 16, VIRTQ_DESC_F_WRITE, 0);
  p.offerRaw(6);
  const c = p.device.take();
  t.not(c, null, 'a valid chain after the bad one is taken');
  t.is(c!.readableLength, 16);
  t.is(c!.writableLength, 16);
  p.device.push(c!, 16);
  t.is(p.errors.length, 1, 'no further errors');
}

test('descriptor address outside guest memory', (t) => {
  const p = makeRingPair(SIZE);
  p.writeDesc(0, OUTSIDE, 16, 0, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_DESC_ADDRESS', { descriptor: 0 });
  t.regex(p.errors[0]!.message, /outside guest memory/);
});

test('descriptor range running past the end of memory', (t) => {
  const p = makeRingPair(SIZE);
  p.writeDesc(0, BASE + (1 << 20) - 8, 16, 0, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_DESC_ADDRESS', { descriptor: 0 });
});

test('descriptor address beyond 2^53', (t) => {
  const p = makeRingPair(SIZE);
  p.writeDesc(0, 2 ** 60, 16, 0, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_DESC_ADDRESS', { descriptor: 0 });
});

test('next index outside the descriptor table', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  p.writeDesc(0, addr, 16, VIRTQ_DESC_F_NEXT, SIZE + 3);
  expectRefused(t, p, 0, 'ERR_VIRTQ_DESC_INDEX', { descriptor: 0 });
});

test('head index outside the descriptor table', (t) => {
  const p = makeRingPair(SIZE);
  expectRefused(t, p, 1000, 'ERR_VIRTQ_DESC_INDEX', { headReturned: false });
});

test('a loop in the descriptor chain', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  p.writeDesc(0, addr, 4, VIRTQ_DESC_F_NEXT, 1);
  p.writeDesc(1, addr, 4, VIRTQ_DESC_F_NEXT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_CHAIN_TOO_LONG');
});

test('a chain longer than the queue through an indirect table', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  const entries = SIZE * 2;
  const [tableAddr, table] = p.buffer(16 * entries);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  for (let i = 0; i < entries; i++) {
    v.setUint32(i * 16, addr, true);
    v.setUint32(i * 16 + 8, 4, true);
    v.setUint16(i * 16 + 12, i + 1 < entries ? VIRTQ_DESC_F_NEXT : 0, true);
    v.setUint16(i * 16 + 14, i + 1, true);
  }
  p.writeDesc(0, tableAddr, 16 * entries, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_CHAIN_TOO_LONG', { descriptor: 0 });
});

test('a loop inside an indirect table', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  const [tableAddr, table] = p.buffer(32);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  for (let i = 0; i < 2; i++) {
    v.setUint32(i * 16, addr, true);
    v.setUint32(i * 16 + 8, 4, true);
    v.setUint16(i * 16 + 12, VIRTQ_DESC_F_NEXT, true);
    v.setUint16(i * 16 + 14, 1 - i, true);
  }
  p.writeDesc(0, tableAddr, 32, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_CHAIN_TOO_LONG', { descriptor: 0 });
});

test('an indirect descriptor inside an indirect table', (t) => {
  const p = makeRingPair(SIZE);
  const [tableAddr, table] = p.buffer(16);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  v.setUint32(0, tableAddr, true);
  v.setUint32(8, 16, true);
  v.setUint16(12, VIRTQ_DESC_F_INDIRECT, true);
  p.writeDesc(0, tableAddr, 16, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_NESTED_INDIRECT', { descriptor: 0 });
});

test('a zero-length indirect table', (t) => {
  const p = makeRingPair(SIZE);
  const [tableAddr] = p.buffer(16);
  p.writeDesc(0, tableAddr, 0, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_INDIRECT_LENGTH', { descriptor: 0 });
});

test('an indirect table whose length is not a multiple of 16', (t) => {
  const p = makeRingPair(SIZE);
  const [tableAddr] = p.buffer(32);
  p.writeDesc(0, tableAddr, 20, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_INDIRECT_LENGTH', { descriptor: 0 });
});

test('an indirect table outside guest memory', (t) => {
  const p = makeRingPair(SIZE);
  p.writeDesc(0, OUTSIDE, 32, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_DESC_ADDRESS', { descriptor: 0 });
});

test('next inside an indirect table pointing outside the table', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  const [tableAddr, table] = p.buffer(32);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  v.setUint32(0, addr, true);
  v.setUint32(8, 4, true);
  v.setUint16(12, VIRTQ_DESC_F_NEXT, true);
  v.setUint16(14, 5, true);
  p.writeDesc(0, tableAddr, 32, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_DESC_INDEX', { descriptor: 0 });
});

test('INDIRECT and NEXT on the same descriptor', (t) => {
  const p = makeRingPair(SIZE);
  const [tableAddr] = p.buffer(16);
  p.writeDesc(0, tableAddr, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
  expectRefused(t, p, 0, 'ERR_VIRTQ_INDIRECT_NEXT', { descriptor: 0 });
});

test('an indirect descriptor when VIRTIO_F_INDIRECT_DESC was not negotiated', (t) => {
  const p = makeRingPair(SIZE, { indirect: false });
  const [tableAddr] = p.buffer(16);
  p.writeDesc(0, tableAddr, 16, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_INDIRECT_NOT_NEGOTIATED', { descriptor: 0 });
});

test('a device-readable descriptor after a writable one', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(32);
  p.writeDesc(0, addr, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  p.writeDesc(1, addr + 16, 16, 0, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_READABLE_AFTER_WRITABLE', { descriptor: 1 });
});

test('a device-readable entry after a writable one inside an indirect table', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(32);
  const [tableAddr, table] = p.buffer(32);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  v.setUint32(0, addr, true);
  v.setUint32(8, 16, true);
  v.setUint16(12, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, true);
  v.setUint16(14, 1, true);
  v.setUint32(16, addr + 16, true);
  v.setUint32(24, 16, true);
  p.writeDesc(0, tableAddr, 32, VIRTQ_DESC_F_INDIRECT, 0);
  expectRefused(t, p, 0, 'ERR_VIRTQ_READABLE_AFTER_WRITABLE', { descriptor: 0 });
});

test('a head offered again while the device still holds it', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  p.writeDesc(0, addr, 16, 0, 0);
  p.offerRaw(0);
  const c = p.device.take();
  t.not(c, null);
  p.offerRaw(0);
  t.is(p.device.take(), null);
  t.is(p.errors[0]?.code, 'ERR_VIRTQ_DESC_INDEX');
  p.device.push(c!, 0);
  t.is(p.device.flush(), true);
});

test('avail.idx jumping by more than the queue size marks the queue broken', (t) => {
  const p = makeRingPair(SIZE);
  p.setAvailIdx(SIZE + 5);
  t.is(p.device.take(), null);
  t.is(p.errors[0]?.code, 'ERR_VIRTQ_AVAIL_INDEX');
  t.truthy(p.device.broken);
  t.false(p.device.hasAvailable());
  t.is(p.device.take(), null, 'a broken queue hands out nothing');
});

test('valid indirect chains with mixed shapes are walked completely', (t) => {
  const p = makeRingPair(SIZE);
  const [addr, bytes] = p.buffer(64);
  for (let i = 0; i < 64; i++) bytes[i] = i;
  // Direct readable descriptor, then an indirect table with one readable and two writable.
  const [tableAddr, table] = p.buffer(48);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const entry = (i: number, a: number, len: number, flags: number, next: number): void => {
    v.setUint32(i * 16, a, true);
    v.setUint32(i * 16 + 8, len, true);
    v.setUint16(i * 16 + 12, flags, true);
    v.setUint16(i * 16 + 14, next, true);
  };
  entry(0, addr + 8, 8, VIRTQ_DESC_F_NEXT, 2);
  entry(2, addr + 16, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
  entry(1, addr + 32, 32, VIRTQ_DESC_F_WRITE, 0);
  p.writeDesc(3, addr, 8, VIRTQ_DESC_F_NEXT, 4);
  p.writeDesc(4, tableAddr, 48, VIRTQ_DESC_F_INDIRECT, 0);
  p.offerRaw(3);
  const c = p.device.take()!;
  t.is(c.readableCount, 2);
  t.is(c.writableCount, 2);
  t.is(c.readableLength, 16);
  t.is(c.writableLength, 48);
  const out = Buffer.alloc(16);
  t.is(c.read(0, out, 0, 16), 16);
  t.deepEqual([...out], [...Array(16).keys()]);
  t.is(c.read(5, out, 0, 16), 11, 'read from an offset spanning segments');
  t.is(out[0], 5);
  const src = Buffer.alloc(48, 0xee);
  t.is(c.write(10, src, 0, 48), 38, 'write stops at the end of the writable part');
  t.is(bytes[16 + 10], 0xee);
  t.is(bytes[16 + 9], 16 + 9);
  t.is(p.errors.length, 0);
});

test('driver half: a used id that is not an outstanding chain marks the queue broken', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  p.driver.add(1, [], [[addr, 16]]);
  p.driver.publish();
  const used = new DataView(p.driver.used.bytes.buffer, p.driver.used.bytes.byteOffset);
  used.setUint32(4, 5, true); // id 5 was never added
  used.setUint32(8, 0, true);
  used.setUint16(2, 1, true);
  const err = t.throws(() => p.driver.drainUsed(() => {}));
  t.is((err as { code?: string }).code, 'ERR_VIRTQ_USED_ID');
  t.truthy(p.driver.broken);
  t.throws(() => p.driver.publish(), { message: /not an outstanding chain/ });
});

test('driver half: a used length beyond the writable bytes marks the queue broken', (t) => {
  const p = makeRingPair(SIZE);
  const [addr] = p.buffer(16);
  const head = p.driver.add(1, [], [[addr, 16]]);
  p.driver.publish();
  const used = new DataView(p.driver.used.bytes.buffer, p.driver.used.bytes.byteOffset);
  used.setUint32(4, head, true);
  used.setUint32(8, 17, true);
  used.setUint16(2, 1, true);
  const err = t.throws(() => p.driver.drainUsed(() => {}));
  t.is((err as { code?: string }).code, 'ERR_VIRTQ_USED_LEN');
});

test('driver half: used.idx far ahead of the outstanding chains marks the queue broken', (t) => {
  const p = makeRingPair(SIZE);
  const used = new DataView(p.driver.used.bytes.buffer, p.driver.used.bytes.byteOffset);
  used.setUint16(2, 3, true);
  const err = t.throws(() => p.driver.drainUsed(() => {}));
  t.is((err as { code?: string }).code, 'ERR_VIRTQ_USED_INDEX');
});

test('ring setup refuses misaligned or out-of-memory rings', async (t) => {
  const { SplitVirtqueueDevice: VirtqueueDevice } = await import('../kernel/virtqueue/device-queue.js');
  const p = makeRingPair(SIZE);
  const base = { name: 'q', index: 0, size: SIZE, memory: p.memory, eventIdx: true, indirect: true };
  t.throws(() => new VirtqueueDevice({ ...base, descAddr: BASE + 8, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /not 16-byte aligned/ });
  t.throws(() => new VirtqueueDevice({ ...base, descAddr: OUTSIDE, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /outside guest memory/ });
  t.throws(() => new VirtqueueDevice({ ...base, size: 3, descAddr: BASE, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /power of two/ });
  t.throws(() => new VirtqueueDevice({ ...base, size: 65536, descAddr: BASE, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /power of two/ });
});

// ---- The packed layout (virtio 1.2, 2.8). A chain whose end the device can find is
// refused and returned used with length 0, and the queue goes on; a ring the device can
// no longer follow (a descriptor with the wrong wrap bits, a chain that never ends) is
// marked broken.

const PACKED_SIZE = 8;

/** A packed pair; `at`/`wrap` track the driver side's next position for raw offers. */
function packedPair(opts: { size?: number; indirect?: boolean; memoryBytes?: number } = {}): RingPair<number> & { at: number; wrap: number } {
  return Object.assign(makeRingPair<number>(opts.size ?? PACKED_SIZE, { layout: 'packed', indirect: opts.indirect ?? true, memoryBytes: opts.memoryBytes ?? 1 << 20 }), { at: 0, wrap: 1 });
}

/** Offers a raw chain at the pair's next position and advances it. */
function offer(p: ReturnType<typeof packedPair>, descs: Array<{ addr: number; len: number; flags?: number; id: number }>): number {
  const head = p.at;
  const next = p.offerPacked(p.at, p.wrap, descs);
  if (next <= head) p.wrap ^= 1;
  p.at = next;
  return head;
}

/** The used descriptor at ring position `pos`: [flags, id, len]. */
function usedAt(p: RingPair<number>, pos: number): [number, number, number] {
  const v = new DataView(p.driver.desc.bytes.buffer, p.driver.desc.bytes.byteOffset);
  return [v.getUint16(pos * 16 + 14, true), v.getUint16(pos * 16 + 12, true), v.getUint32(pos * 16 + 8, true)];
}

/** Expects the chain just offered at `head` refused with `code`, returned used (id, length 0), and a valid chain after it served. */
function expectPackedRefused(t: ExecutionContext, p: ReturnType<typeof packedPair>, head: number, id: number, code: VirtqueueErrorCode, descriptor: number): void {
  t.is(p.device.take(), null, 'the bad chain is not handed to the device model');
  t.is(p.errors.length, 1, 'one error reported');
  const err = p.errors[0]!;
  t.is(err.code, code);
  t.regex(err.message, /^test queue: /, 'the message names the queue');
  t.regex(err.message, /descriptor/);
  t.is(err.descriptor, descriptor, 'and the descriptor');
  t.is(p.device.broken, null, 'the queue is not broken');
  p.device.flush();
  const [flags, usedId, len] = usedAt(p, head);
  t.is(flags & (VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED), VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED, 'returned used (wrap counter 1)');
  t.is(usedId, id, 'under its buffer id');
  t.is(len, 0, 'with length 0');
  // The queue goes on.
  const [addr] = p.buffer(32);
  const next = offer(p, [{ addr, len: 16, id: 7 }, { addr: addr + 16, len: 16, flags: VIRTQ_DESC_F_WRITE, id: 7 }]);
  const c = p.device.take();
  t.not(c, null, 'a valid chain after the bad one is taken');
  t.is(c!.head, 7);
  t.is(c!.readableLength, 16);
  t.is(c!.writableLength, 16);
  p.device.push(c!, 5);
  p.device.flush();
  t.deepEqual(usedAt(p, next).slice(1), [7, 5]);
  t.is(p.errors.length, 1, 'no further errors');
}

test('packed: a descriptor whose AVAIL and USED bits both equal the wrap counter marks the queue broken', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  p.writePacked(0, addr, 16, 0, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
  t.true(p.device.hasAvailable());
  t.is(p.device.take(), null);
  t.is(p.errors[0]?.code, 'ERR_VIRTQ_WRAP');
  t.is(p.errors[0]?.descriptor, 0);
  t.regex(p.errors[0]!.message, /^test queue: descriptor 0 has AVAIL and USED both 1/);
  t.truthy(p.device.broken);
  t.false(p.device.hasAvailable());
  t.is(p.device.take(), null, 'a broken queue hands out nothing');
});

test('packed: a descriptor with the previous lap\'s AVAIL bit is simply not available', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  p.writePacked(0, addr, 16, 0, VIRTQ_DESC_F_USED); // AVAIL 0, USED 1: available only in a lap with wrap counter 0
  t.false(p.device.hasAvailable());
  t.is(p.device.take(), null);
  t.is(p.errors.length, 0);
  t.is(p.device.broken, null);
});

test('packed: a chain that continues into a descriptor not made available never ends: the queue is marked broken', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  // Head available with NEXT; the next descriptor still has last lap's bits.
  p.writePacked(1, addr, 16, 3, 0);
  p.writePacked(0, addr, 16, 3, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
  t.is(p.device.take(), null);
  t.is(p.errors[0]?.code, 'ERR_VIRTQ_WRAP');
  t.is(p.errors[0]?.descriptor, 1, 'names the descriptor that is not available');
  t.regex(p.errors[0]!.message, /chain at descriptor 0 continues to descriptor 1.*never ends/);
  t.truthy(p.device.broken);
});

test('packed: a chain of NEXT descriptors all around the ring is refused as too long and the queue marked broken', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  for (let i = PACKED_SIZE - 1; i >= 0; i--) p.writePacked(i, addr, 4, 1, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_NEXT);
  t.is(p.device.take(), null);
  t.is(p.errors[0]?.code, 'ERR_VIRTQ_CHAIN_TOO_LONG');
  t.is(p.errors[0]?.descriptor, 0);
  t.regex(p.errors[0]!.message, /does not end within the ring of 8 descriptors/);
  t.truthy(p.device.broken);
});

test('packed: an indirect table inside an indirect table is refused; the queue goes on', (t) => {
  const p = packedPair();
  const [tableAddr, table] = p.buffer(32);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  p.driver.writeIndirectEntry(v, 0, 2, tableAddr, 16, false);
  p.driver.writeIndirectEntry(v, 1, 2, tableAddr, 32, false);
  v.setUint16(16 + 14, VIRTQ_DESC_F_INDIRECT, true); // entry 1 points at a table itself
  const head = offer(p, [{ addr: tableAddr, len: 32, flags: VIRTQ_DESC_F_INDIRECT, id: 2 }]);
  expectPackedRefused(t, p, head, 2, 'ERR_VIRTQ_NESTED_INDIRECT', 0);
  t.regex(p.errors[0]!.message, /entry 1 is itself indirect/);
});

test('packed: an indirect descriptor that is not its chain\'s only one is refused; the queue goes on', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  const [tableAddr, table] = p.buffer(16);
  p.driver.writeIndirectEntry(new DataView(table.buffer, table.byteOffset, 16), 0, 1, addr, 16, false);
  const head = offer(p, [{ addr, len: 16, id: 4 }, { addr: tableAddr, len: 16, flags: VIRTQ_DESC_F_INDIRECT, id: 4 }]);
  expectPackedRefused(t, p, head, 4, 'ERR_VIRTQ_INDIRECT_NEXT', 1);
});

test('packed: an indirect descriptor without VIRTIO_F_INDIRECT_DESC is refused', (t) => {
  const p = packedPair({ indirect: false });
  const [tableAddr] = p.buffer(16);
  const head = offer(p, [{ addr: tableAddr, len: 16, flags: VIRTQ_DESC_F_INDIRECT, id: 1 }]);
  expectPackedRefused(t, p, head, 1, 'ERR_VIRTQ_INDIRECT_NOT_NEGOTIATED', 0);
});

test('packed: an indirect table of a length that is not a multiple of 16 is refused', (t) => {
  const p = packedPair();
  const [tableAddr] = p.buffer(32);
  const head = offer(p, [{ addr: tableAddr, len: 20, flags: VIRTQ_DESC_F_INDIRECT, id: 5 }]);
  expectPackedRefused(t, p, head, 5, 'ERR_VIRTQ_INDIRECT_LENGTH', 0);
});

test('packed: lengths that add up beyond what a used length can say (2^32 - 1) are refused', (t) => {
  // An indirect table of 4100 entries, each the same 1 MiB: 4 GiB and more.
  const p = packedPair({ size: 8192, memoryBytes: 4 << 20 });
  const [buf] = p.buffer(1 << 20);
  const entries = 4100;
  const [tableAddr, table] = p.buffer(16 * entries);
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  for (let i = 0; i < entries; i++) p.driver.writeIndirectEntry(v, i, entries, buf, 1 << 20, true);
  const head = offer(p, [{ addr: tableAddr, len: 16 * entries, flags: VIRTQ_DESC_F_INDIRECT, id: 6 }]);
  expectPackedRefused(t, p, head, 6, 'ERR_VIRTQ_CHAIN_LENGTH', 0);
  t.regex(p.errors[0]!.message, /indirect entry 4095/);
});

test('packed: an address whose range runs past 2^64 is refused', (t) => {
  const p = packedPair();
  const head = offer(p, [{ addr: 0, len: 16, id: 0 }]);
  const v = new DataView(p.driver.desc.bytes.buffer, p.driver.desc.bytes.byteOffset);
  v.setUint32(head * 16, 0xfffffff8, true); // address 2^64 - 8, 16 bytes
  v.setUint32(head * 16 + 4, 0xffffffff, true);
  expectPackedRefused(t, p, head, 0, 'ERR_VIRTQ_DESC_ADDRESS', 0);
  t.regex(p.errors[0]!.message, /beyond 2\^53/);
});

test('packed: a buffer outside guest memory is refused', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  const head = offer(p, [{ addr, len: 16, id: 3 }, { addr: OUTSIDE, len: 16, flags: VIRTQ_DESC_F_WRITE, id: 3 }]);
  expectPackedRefused(t, p, head, 3, 'ERR_VIRTQ_DESC_ADDRESS', 1);
});

test('packed: a device-readable descriptor after a writable one is refused', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(32);
  const head = offer(p, [{ addr, len: 16, flags: VIRTQ_DESC_F_WRITE, id: 2 }, { addr: addr + 16, len: 16, id: 2 }]);
  expectPackedRefused(t, p, head, 2, 'ERR_VIRTQ_READABLE_AFTER_WRITABLE', 1);
});

test('packed: a buffer id outside the ring\'s ids is refused', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  const head = offer(p, [{ addr, len: 16, id: 1000 }]);
  expectPackedRefused(t, p, head, 1000, 'ERR_VIRTQ_DESC_INDEX', 0);
});

test('packed: a buffer id offered again while the device holds it is refused without a used descriptor', (t) => {
  const p = packedPair();
  const [addr] = p.buffer(16);
  offer(p, [{ addr, len: 16, id: 3 }]);
  const c = p.device.take();
  t.not(c, null);
  offer(p, [{ addr, len: 16, id: 3 }]);
  t.is(p.device.take(), null);
  t.is(p.errors[0]?.code, 'ERR_VIRTQ_DESC_INDEX');
  t.regex(p.errors[0]!.message, /buffer id 3, which the device still holds/);
  p.device.push(c!, 0);
  t.true(p.device.flush());
  t.deepEqual(usedAt(p, 0).slice(1), [3, 0]);
  t.is(p.device.heldChains, 0);
});

test('packed, in order: pushing a chain before one taken earlier is refused', (t) => {
  const p = makeRingPair<number>(PACKED_SIZE, { layout: 'packed', inOrder: true });
  const [addr] = p.buffer(16);
  p.driver.add(1, [[addr, 16]]);
  p.driver.add(2, [[addr, 16]]);
  p.driver.publish();
  const a = p.device.take()!;
  const b = p.device.take()!;
  const err = t.throws(() => p.device.push(b, 0));
  t.is((err as { code?: string }).code, 'ERR_VIRTQ_IN_ORDER');
  p.device.push(a, 0);
  p.device.push(b, 0);
  p.device.flush();
  const got: number[] = [];
  t.is(p.driver.drainUsed((tk) => got.push(tk)), 2);
  t.deepEqual(got, [1, 2], 'one used descriptor for both, in order');
  t.deepEqual(usedAt(p, 0).slice(1), [b.head, 0], 'the run names its last chain');
});

/** Writes a used descriptor at ring position `pos` as a hostile device would. */
function writeUsed(p: RingPair<number>, pos: number, id: number, len: number, flags = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE): void {
  p.writePacked(pos, 0, len, id, flags);
}

test('packed driver half: a used descriptor naming an id never made available marks the queue broken', (t) => {
  for (const id of [5, 1000]) {
    const p = makeRingPair<number>(PACKED_SIZE, { layout: 'packed' });
    const [addr] = p.buffer(16);
    p.driver.add(1, [], [[addr, 16]]);
    p.driver.publish();
    writeUsed(p, 0, id, 0);
    t.true(p.driver.hasUsed());
    const err = t.throws(() => p.driver.drainUsed(() => {}));
    t.is((err as { code?: string }).code, 'ERR_VIRTQ_USED_ID');
    t.regex((err as Error).message, new RegExp(`^test queue: used descriptor 0 names buffer id ${id}, which is not an outstanding chain made available`));
    t.is((err as { descriptor?: number }).descriptor, 0);
    t.truthy(p.driver.broken);
    t.throws(() => p.driver.publish(), { message: /not an outstanding chain/ });
  }
});

test('packed driver half: a used descriptor naming a chain committed but not yet made available marks the queue broken', (t) => {
  const p = makeRingPair<number>(PACKED_SIZE, { layout: 'packed' });
  const [addr] = p.buffer(16);
  p.driver.add(1, [], [[addr, 16]]);
  p.driver.publish();
  const id = p.driver.add(2, [], [[addr, 16]]); // committed, not published
  writeUsed(p, 0, id, 0);
  const err = t.throws(() => p.driver.drainUsed(() => {}));
  t.is((err as { code?: string }).code, 'ERR_VIRTQ_USED_ID');
});

test('packed driver half: a used length beyond the chain\'s writable bytes marks the queue broken', (t) => {
  const p = makeRingPair<number>(PACKED_SIZE, { layout: 'packed' });
  const [addr] = p.buffer(16);
  const id = p.driver.add(1, [], [[addr, 16]]);
  p.driver.publish();
  writeUsed(p, 0, id, 17);
  const err = t.throws(() => p.driver.drainUsed(() => {}));
  t.is((err as { code?: string }).code, 'ERR_VIRTQ_USED_LEN');
  t.regex((err as Error).message, /length 17 for buffer id 0 exceeds its 16 writable bytes/);
});

test('packed driver half: without the WRITE flag a fitting length is taken (QEMU 7.2 never sets WRITE), one too long is ignored (2.8.4)', (t) => {
  const p = makeRingPair<number>(PACKED_SIZE, { layout: 'packed' });
  const [addr] = p.buffer(32);
  const a = p.driver.add(1, [], [[addr, 16]]);
  const b = p.driver.add(2, [[addr + 16, 16]]);
  p.driver.publish();
  writeUsed(p, 0, a, 12, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
  writeUsed(p, 1, b, 9999, VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED);
  const got: number[] = [];
  t.is(p.driver.drainUsed((tk, len) => got.push(tk, len)), 2);
  t.deepEqual(got, [1, 12, 2, 0]);
  t.is(p.driver.broken, null);
});

test('packed: a vring base with a position outside the ring is refused at setup', async (t) => {
  const { PackedVirtqueueDevice } = await import('../kernel/virtqueue/packed-device-queue.js');
  const p = makeRingPair(PACKED_SIZE, { layout: 'packed' });
  const base = { name: 'q', index: 0, size: PACKED_SIZE, memory: p.memory, eventIdx: true, indirect: true, descAddr: BASE, availAddr: BASE + 4096, usedAddr: BASE + 8192 };
  t.throws(() => new PackedVirtqueueDevice({ ...base, startIndex: 0x8000 | 9 }), { message: /position 9 is outside a packed ring of 8/ });
  t.notThrows(() => new PackedVirtqueueDevice({ ...base, startIndex: 0x80008003 }));
  t.throws(() => new PackedVirtqueueDevice({ ...base, descAddr: BASE + 8 }), { message: /not 16-byte aligned/ });
  t.throws(() => new PackedVirtqueueDevice({ ...base, availAddr: BASE + 4098 }), { message: /not 4-byte aligned/ });
});
