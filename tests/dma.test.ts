import test from 'ava';
import fc from 'fast-check';
import { BufferPool, DmaArena } from '../kernel/memory/dma.js';

test('allocations are aligned, disjoint, freed and coalesced', (t) => {
  const a = new DmaArena(new SharedArrayBuffer(1 << 16), { base: 0x10000 });
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 3000 }), fc.constantFrom(1, 16, 64, 4096), fc.boolean()), { maxLength: 60 }), (ops) => {
      const live: Uint8Array[] = [];
      for (const [size, align, freeOne] of ops) {
        try {
          const b = a.allocate(size, align);
          if (a.addressOf(b) % align !== 0) return false;
          for (const o of live) {
            if (b.byteOffset < o.byteOffset + o.byteLength && o.byteOffset < b.byteOffset + b.byteLength) return false;
          }
          live.push(b);
        } catch (e) {
          if ((e as { code?: string }).code !== 'ERR_DMA_EXHAUSTED') throw e;
        }
        if (freeOne && live.length > 0) a.free(live.splice(0, 1)[0]!);
      }
      for (const b of live) a.free(b);
      return a.freeBytes === a.size;
    }),
  );
  t.pass();
});

test('addressOf tells DMA memory from other memory', (t) => {
  const sab = new SharedArrayBuffer(8192);
  const a = new DmaArena(sab, { base: 0x40000000 });
  const b = a.allocate(100);
  t.is(a.addressOf(b), 0x40000000 + b.byteOffset);
  t.is(a.addressOf(b.subarray(10)), 0x40000000 + b.byteOffset + 10);
  t.is(a.addressOf(new Uint8Array(100)), -1);
  t.is(a.addressOf(Buffer.from(sab, 0, 10)), 0x40000000, 'a Buffer over the same memory counts');
});

test('paged arenas translate per page and never let a small allocation cross a page', (t) => {
  const page = 4096;
  const addrs = [0x200000, 0x900000, 0x300000, 0x10000];
  const a = new DmaArena(new ArrayBuffer(page * 4), { pageSize: page, pageAddrs: addrs });
  t.is(a.addrOfOffset(0), 0x200000);
  t.is(a.addrOfOffset(page + 5), 0x900005);
  for (const off of [0, 5, page - 1, page, page + 5, 3 * page + 7, 4 * page - 1]) t.is(a.offsetOfAddr(a.addrOfOffset(off)), off, `offset ${off} round trip`);
  t.is(a.offsetOfAddr(0x200000 + page), -1, 'just past a page that is not followed by the next one');
  t.is(a.offsetOfAddr(0x10000 - 1), -1);
  const x = a.allocate(3000);
  const y = a.allocate(3000); // would cross the first page boundary: moved to page 1
  t.is(Math.floor(y.byteOffset / page), Math.floor((y.byteOffset + y.byteLength - 1) / page));
  t.is(a.addressOf(y), addrs[Math.floor(y.byteOffset / page)]! + (y.byteOffset % page));
  const big = a.allocate(page * 2);
  t.true(a.contiguousLength(big) <= page, 'a multi-page buffer is contiguous only to its page end');
  t.is(a.contiguousLength(x), 3000);
  t.throws(() => new DmaArena(new ArrayBuffer(page * 4), { pageSize: page, pageAddrs: [1, 2] }), { message: /page addresses/ });
});

test('buffer pool: alloc until empty, free, double free refused, no slot crosses a page', (t) => {
  const a = new DmaArena(new ArrayBuffer(1 << 16), { pageSize: 4096, pageAddrs: Array.from({ length: 16 }, (_, i) => i * 0x100000) });
  const p = new BufferPool(a, 1500, 20);
  const got: number[] = [];
  let s: number;
  while ((s = p.alloc()) !== -1) got.push(s);
  t.is(got.length, 20);
  t.is(new Set(got).size, 20);
  for (const i of got) {
    const v = p.views[i]!;
    t.is(v.byteLength, 1500);
    t.is(Math.floor(v.byteOffset / 4096), Math.floor((v.byteOffset + 1499) / 4096));
    t.is(p.addrs[i], a.addressOf(v));
  }
  p.free(got[3]!);
  t.is(p.available, 1);
  t.throws(() => p.free(got[3]!), { message: /not allocated/ });
  t.throws(() => p.free(99), { message: /not allocated/ });
  t.is(p.alloc(), got[3]);
  for (const i of got) p.free(i);
  p.destroy();
  t.is(a.freeBytes, a.size);
});
