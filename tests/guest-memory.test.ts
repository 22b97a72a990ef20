import test from 'ava';
import { GuestMemory, GuestMemoryError, makeRegion } from '../kernel/memory/guest-memory.js';

function twoRegions(): GuestMemory {
  // Like QEMU's table: [0, 0xa0000) and [0xc0000, 0x100000), a hole between.
  const a = new ArrayBuffer(0xa0000);
  const b = new ArrayBuffer(0x100000);
  return new GuestMemory([makeRegion('low', 0, a), makeRegion('high', 0xc0000, b, 0xc0000, 0x40000)]);
}

test('locate finds the region and offset of a range', (t) => {
  const m = twoRegions();
  const r = m.locate(0xc0010, 16);
  t.is(r.name, 'high');
  t.is(0xc0010 - r.guestAddr, 0x10);
  t.is(m.locate(0, 0xa0000).name, 'low');
  t.is(m.view(0xfffff, 1).length, 1);
});

test('a range in the hole is refused with address, length and the regions', (t) => {
  const m = twoRegions();
  const e = t.throws(() => m.locate(0xb0000, 4), { instanceOf: GuestMemoryError });
  t.is(e!.code, 'ERR_GUEST_MEMORY_RANGE');
  t.regex(e!.message, /0xb0000/);
  t.regex(e!.message, /length 4/);
  t.regex(e!.message, /low \[0x0\.\.0xa0000\)/);
});

test('a range crossing the end of a region into the hole is refused, naming the region', (t) => {
  const m = twoRegions();
  const e = t.throws(() => m.locate(0x9fff0, 32), { instanceOf: GuestMemoryError });
  t.regex(e!.message, /runs past the end of region low/);
  t.false(m.contains(0x9fff0, 32));
  t.true(m.contains(0x9fff0, 16));
});

test('past the end of memory, negative and non-integer ranges are refused', (t) => {
  const m = twoRegions();
  t.throws(() => m.locate(0x100000, 1), { instanceOf: GuestMemoryError });
  t.throws(() => m.locate(-1, 1), { instanceOf: GuestMemoryError });
  t.throws(() => m.locate(0, -1), { instanceOf: GuestMemoryError });
  t.throws(() => m.locate(1.5, 1), { instanceOf: GuestMemoryError });
  t.throws(() => m.locate(2 ** 64, 1), { instanceOf: GuestMemoryError });
});

test('overlapping regions are refused', (t) => {
  t.throws(() => new GuestMemory([makeRegion('a', 0, new ArrayBuffer(100)), makeRegion('b', 50, new ArrayBuffer(100))]), { message: /overlap/ });
});

test('the region offset into the backing buffer is honoured', (t) => {
  const backing = new Uint8Array(0x100000);
  backing[0xc0005] = 42;
  const m = new GuestMemory([makeRegion('high', 0xc0000, backing.buffer, 0xc0000, 0x40000)]);
  t.is(m.view(0xc0005, 1)[0], 42);
});
