// ChunkSlab: host-bound chunks carved from shared slabs never overlap, have the length
// asked for, and a chunk larger than a slab gets a slab of its own.
import test from 'ava';
import fc from 'fast-check';
import { ChunkSlab, SLAB_BYTES } from '../drivers/virtio-vsock/device/chunk-slab.js';

test('chunks have their length and never share a byte, in any sequence of sizes', (t) => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 300_000 }), { minLength: 1, maxLength: 60 }), (sizes) => {
      const slab = new ChunkSlab(256 * 1024);
      const chunks = sizes.map((n, i) => {
        const c = slab.take(n);
        c.fill(i & 0xff);
        return c;
      });
      // Every chunk still holds its own fill: no later chunk wrote over it.
      chunks.forEach((c, i) => {
        if (c.length !== sizes[i]) throw new Error(`chunk ${i}: length ${c.length}, asked ${sizes[i]}`);
        if (!c.every((b) => b === (i & 0xff))) throw new Error(`chunk ${i} was overwritten`);
      });
    }),
  );
  t.pass();
});

test('a slab is shared until it is full; a chunk larger than a slab gets its own', (t) => {
  const slab = new ChunkSlab(1024);
  const a = slab.take(500);
  const b = slab.take(500);
  t.is(slab.slabs, 1);
  t.is(a.buffer, b.buffer);
  t.is(b.byteOffset - a.byteOffset, 504); // 8-byte aligned starts
  slab.take(100); // does not fit the 16 bytes left: a new slab
  t.is(slab.slabs, 2);
  const big = slab.take(5000);
  t.is(big.length, 5000);
  t.is(slab.slabs, 3);
  t.is(new ChunkSlab().take(1).buffer.byteLength, SLAB_BYTES);
});
