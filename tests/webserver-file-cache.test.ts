// The webserver's file cache (appliance/webserver/files/small-file-cache.ts): bodies from the
// server's allocator (DMA memory in the guest), shared by responses, freed only when
// evicted and no response is still sending them.
import test from 'ava';
import { SmallFileCache } from '../appliance/webserver/files/small-file-cache.js';

function trackingAllocator(limitBytes = Infinity) {
  const live = new Set<Uint8Array>();
  let used = 0;
  return {
    live,
    frees: 0,
    alloc(size: number): Uint8Array {
      if (used + size > limitBytes) throw new RangeError('out of DMA memory');
      used += size;
      const b = Buffer.alloc(size);
      live.add(b);
      return b;
    },
    free(b: Uint8Array): void {
      if (!live.delete(b)) throw new Error('freed twice or never allocated');
      used -= b.byteLength;
      this.frees++;
    },
  };
}

test('a body comes from the allocator and hits match size and mtime only', (t) => {
  const alloc = trackingAllocator();
  const c = new SmallFileCache({ maxEntries: 4, maxFileBytes: 100, maxTotalBytes: 1000 }, alloc);
  const f = c.allocate(10);
  f.body.fill(7);
  t.true(alloc.live.has(f.body));
  const e = c.set('/a', f, 5);
  t.is(c.get('/a', 10, 5), e);
  t.is(c.get('/a', 10, 6), null, 'another mtime');
  t.is(c.get('/a', 11, 5), null, 'another size');
  t.is(c.get('/b', 10, 5), null);
  t.deepEqual([c.hits, c.misses], [1, 3]);
  t.false(c.accepts(101));
});

test('an evicted body is freed only after the last response sending it is done', (t) => {
  const alloc = trackingAllocator();
  const c = new SmallFileCache({ maxEntries: 1, maxFileBytes: 100, maxTotalBytes: 1000 }, alloc);
  const a = c.set('/a', c.allocate(10), 1);
  c.retain(a);
  c.retain(a);
  c.set('/b', c.allocate(10), 1); // evicts /a (one entry at most)
  t.is(c.get('/a', 10, 1), null);
  t.is(alloc.frees, 0, 'still being sent');
  c.release(a);
  t.is(alloc.frees, 0);
  c.release(a);
  t.is(alloc.frees, 1);
  t.false(alloc.live.has(a.body));
});

test('replacing a path, the byte limit, discard and clear free exactly what is unused', (t) => {
  const alloc = trackingAllocator();
  const c = new SmallFileCache({ maxEntries: 10, maxFileBytes: 100, maxTotalBytes: 25 }, alloc);
  const a1 = c.set('/a', c.allocate(10), 1);
  c.set('/a', c.allocate(10), 2); // a new version replaces the old one
  t.false(alloc.live.has(a1.body));
  c.set('/b', c.allocate(10), 1);
  c.set('/c', c.allocate(10), 1); // 30 bytes > 25: the least recently used (/a) goes
  t.is(c.get('/a', 10, 2), null);
  t.is(c.size, 2);
  t.is(c.bytes, 20);
  const failed = c.allocate(10);
  c.discard(failed); // a read that failed
  t.false(alloc.live.has(failed.body));
  const b = c.get('/b', 10, 1)!;
  c.retain(b);
  c.clear();
  t.is(c.size, 0);
  t.is(alloc.live.size, 1, 'the body being sent survives clear()');
  c.release(b);
  t.is(alloc.live.size, 0);
});

test('when the allocator is out of memory the body lives on the heap and is never passed to free', (t) => {
  const alloc = trackingAllocator(15);
  const c = new SmallFileCache({ maxEntries: 10, maxFileBytes: 100, maxTotalBytes: 1000 }, alloc);
  const a = c.set('/a', c.allocate(10), 1);
  const b = c.set('/b', c.allocate(10), 1); // 20 > 15
  t.is(c.heapFallbacks, 1);
  t.false(alloc.live.has(b.body));
  t.is(b.body.length, 10);
  c.clear();
  t.is(alloc.frees, 1, 'only the allocator body');
  t.false(alloc.live.has(a.body));
});
