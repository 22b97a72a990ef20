// The device half against hostile descriptors: one test per case. Each bad chain is
// refused with an error naming the queue and the descriptor, the driver gets the head
// back (length 0) when the head itself is valid, and the queue keeps serving valid
// chains. Also the driver half against a hostile device.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../kernel/virtqueue/layout.js';
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
  const { VirtqueueDevice } = await import('../kernel/virtqueue/device-queue.js');
  const p = makeRingPair(SIZE);
  const base = { name: 'q', index: 0, size: SIZE, memory: p.memory, eventIdx: true, indirect: true };
  t.throws(() => new VirtqueueDevice({ ...base, descAddr: BASE + 8, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /not 16-byte aligned/ });
  t.throws(() => new VirtqueueDevice({ ...base, descAddr: OUTSIDE, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /outside guest memory/ });
  t.throws(() => new VirtqueueDevice({ ...base, size: 3, descAddr: BASE, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /power of two/ });
  t.throws(() => new VirtqueueDevice({ ...base, size: 65536, descAddr: BASE, availAddr: BASE + 4096, usedAddr: BASE + 8192 }), { message: /power of two/ });
});
