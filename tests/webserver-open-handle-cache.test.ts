// OpenHandleCache (appliance/webserver/open-handle-cache.ts) against a scripted source:
// reuse, one open shared by concurrent callers, LRU eviction, stale handles, close,
// failing opens and releases - and every handle released exactly once, never while a
// caller still holds it.
import test from 'ava';
import { OpenHandleCache, type OpenHandleSource } from '../appliance/webserver/files/open-handle-cache.js';

interface FakeHandle {
  readonly key: string;
  readonly id: number;
  releases: number;
  /** Leases out right now (kept by the test, to check no release happens under one). */
  users: number;
}

class FakeSource implements OpenHandleSource<FakeHandle> {
  readonly opened: FakeHandle[] = [];
  /** Keys whose current handle is stale (the key names something else now). */
  readonly changed = new Set<string>();
  /** isCurrent answers through a promise (as an lstat that needs a request). */
  asyncCheck = false;
  checks = 0;
  failOpen: Error | null = null;
  failRelease = false;
  /** open() waits for this when set. */
  openGate: Promise<void> | null = null;
  releasedUnderUse = 0;

  async open(key: string): Promise<FakeHandle> {
    if (this.openGate !== null) await this.openGate;
    if (this.failOpen !== null) throw this.failOpen;
    const h: FakeHandle = { key, id: this.opened.length, releases: 0, users: 0 };
    this.opened.push(h);
    this.changed.delete(key); // a fresh open sees what the key names now
    return h;
  }

  isCurrent(key: string, h: FakeHandle): boolean | Promise<boolean> {
    this.checks++;
    const current = !(this.changed.has(key) && this.opened.filter((o) => o.key === key).at(-1) === h);
    return this.asyncCheck ? new Promise((r) => setImmediate(() => r(current))) : current;
  }

  async release(h: FakeHandle): Promise<void> {
    h.releases++;
    if (h.users > 0) this.releasedUnderUse++;
    if (this.failRelease) throw new Error('RELEASE failed');
  }

  releases(): number {
    return this.opened.reduce((n, h) => n + h.releases, 0);
  }
}

const tick = () => new Promise<void>((r) => setImmediate(r));

/** acquire, and mark the handle in use until the returned done(). */
async function use(cache: OpenHandleCache<FakeHandle>, key: string): Promise<{ h: FakeHandle; done: () => void }> {
  const lease = await cache.acquire(key);
  lease.handle.users++;
  return {
    h: lease.handle,
    done: () => {
      lease.handle.users--;
      cache.unref(lease);
    },
  };
}

test('a second acquire of a key reuses the open handle: one open, no release', async (t) => {
  const src = new FakeSource();
  const cache = new OpenHandleCache(src, 4);
  const a = await use(cache, '/a');
  a.done();
  const b = await use(cache, '/a');
  b.done();
  t.is(a.h, b.h);
  t.is(src.opened.length, 1);
  t.is(src.releases(), 0);
  t.like(cache.stats, { hits: 1, misses: 1, openHandles: 1, cached: 1, evictions: 0, staleDrops: 0 });
});

test('concurrent acquires share one open while it is in progress, and its failure', async (t) => {
  const src = new FakeSource();
  const cache = new OpenHandleCache(src, 4);
  let open!: () => void;
  src.openGate = new Promise((r) => (open = r));
  const all = Promise.all([use(cache, '/a'), use(cache, '/a'), use(cache, '/a')]);
  await tick();
  open();
  const got = await all;
  t.is(src.opened.length, 1);
  t.true(got.every((g) => g.h === got[0]!.h));
  t.like(cache.stats, { hits: 2, misses: 1 });
  for (const g of got) g.done();
  t.is(src.releases(), 0, 'still cached');

  src.openGate = null;
  src.failOpen = Object.assign(new Error('no such file'), { code: 'ENOENT' });
  const failing = await Promise.allSettled([cache.acquire('/gone'), cache.acquire('/gone')]);
  t.true(failing.every((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'ENOENT'));
  t.like(cache.stats, { cached: 1, openHandles: 1 }, 'a failed open leaves nothing behind');
  src.failOpen = null;
  const again = await use(cache, '/gone');
  again.done();
  t.is(again.h.key, '/gone', 'the next acquire opens again');
});

test('least recently used out: an idle handle is released at once, exactly once', async (t) => {
  const src = new FakeSource();
  const cache = new OpenHandleCache(src, 2);
  for (const k of ['/a', '/b', '/a', '/c']) (await use(cache, k)).done(); // /b is the oldest when /c comes
  const [a, b, c] = [src.opened[0]!, src.opened[1]!, src.opened[2]!];
  t.deepEqual([a.key, b.key, c.key], ['/a', '/b', '/c']);
  await tick();
  t.deepEqual([a.releases, b.releases, c.releases], [0, 1, 0]);
  t.like(cache.stats, { evictions: 1, openHandles: 2, cached: 2 });
  (await use(cache, '/b')).done(); // reopened; evicts /a
  await tick();
  t.deepEqual([a.releases, b.releases, c.releases], [1, 1, 0]);
  t.is(src.opened.length, 4);
});

test('an evicted handle in use is released when its last user is done, never before', async (t) => {
  const src = new FakeSource();
  const cache = new OpenHandleCache(src, 1);
  const u1 = await use(cache, '/a');
  const u2 = await use(cache, '/a');
  (await use(cache, '/b')).done(); // evicts /a, in use twice
  await tick();
  const a = u1.h;
  t.is(a.releases, 0);
  t.like(cache.stats, { evictions: 1, openHandles: 2, cached: 1 });
  u1.done();
  await tick();
  t.is(a.releases, 0);
  u2.done();
  await tick();
  t.is(a.releases, 1);
  t.is(src.releasedUnderUse, 0);
  t.like(cache.stats, { openHandles: 1 });
  // An entry evicted while its open is still in progress: released after its users are done.
  let open!: () => void;
  src.openGate = new Promise((r) => (open = r));
  const pending = use(cache, '/c');
  await tick();
  src.openGate = null;
  (await use(cache, '/d')).done(); // evicts /c before its open finished
  open();
  const c = await pending;
  t.is(c.h.releases, 0);
  c.done();
  await tick();
  t.is(c.h.releases, 1);
  t.is(src.releasedUnderUse, 0);
});

for (const asyncCheck of [false, true]) {
  test(`a stale handle is dropped and the key opened again (${asyncCheck ? 'asynchronous' : 'synchronous'} check)`, async (t) => {
    const src = new FakeSource();
    src.asyncCheck = asyncCheck;
    const cache = new OpenHandleCache(src, 4);
    (await use(cache, '/a')).done();
    const held = await use(cache, '/a'); // a user of the old handle while it goes stale
    src.changed.add('/a');
    const fresh = await use(cache, '/a');
    t.not(fresh.h, held.h);
    t.like(cache.stats, { staleDrops: 1, misses: 2, hits: 1, openHandles: 2, cached: 1 });
    await tick();
    t.is(held.h.releases, 0, 'still in use');
    held.done();
    fresh.done();
    await tick();
    t.is(held.h.releases, 1);
    t.is(fresh.h.releases, 0);
    t.is(src.releasedUnderUse, 0);
  });
}

test('callers that find the same stale handle at once: one drop, one new open between them', async (t) => {
  const src = new FakeSource();
  src.asyncCheck = true;
  const cache = new OpenHandleCache(src, 4);
  (await use(cache, '/a')).done();
  src.changed.add('/a');
  const got = await Promise.all([use(cache, '/a'), use(cache, '/a'), use(cache, '/a')]);
  t.is(src.opened.length, 2);
  t.true(got.every((g) => g.h === src.opened[1]));
  t.like(cache.stats, { staleDrops: 1, misses: 2 });
  for (const g of got) g.done();
  await tick();
  t.is(src.opened[0]!.releases, 1);
});

test('a check that fails counts as stale', async (t) => {
  const src = new FakeSource();
  const cache = new OpenHandleCache(src, 4);
  (await use(cache, '/a')).done();
  src.isCurrent = () => Promise.reject(new Error('lstat failed'));
  const b = await use(cache, '/a');
  b.done();
  t.is(src.opened.length, 2);
  t.like(cache.stats, { staleDrops: 1 });
});

test('a failing release is counted and changes nothing else', async (t) => {
  const src = new FakeSource();
  src.failRelease = true;
  const cache = new OpenHandleCache(src, 1);
  for (const k of ['/a', '/b', '/a', '/b']) {
    const u = await use(cache, k);
    t.is(u.h.key, k);
    u.done();
  }
  await tick();
  t.like(cache.stats, { releaseErrors: 3, evictions: 3, openHandles: 1 });
  await cache.close();
  t.like(cache.stats, { releaseErrors: 4, openHandles: 0, cached: 0 });
});

test('close() releases the idle handles at once, the ones in use when done; later acquires are not kept', async (t) => {
  const src = new FakeSource();
  const cache = new OpenHandleCache(src, 8);
  for (const k of ['/a', '/b', '/c']) (await use(cache, k)).done();
  const held = await use(cache, '/b');
  await cache.close();
  t.deepEqual(src.opened.map((h) => h.releases), [1, 0, 1]);
  t.like(cache.stats, { cached: 0, openHandles: 1 });
  held.done();
  await tick();
  t.deepEqual(src.opened.map((h) => h.releases), [1, 1, 1]);
  const late = await use(cache, '/a');
  t.is(late.h, src.opened[3]);
  late.done();
  await tick();
  t.is(late.h.releases, 1);
  t.like(cache.stats, { cached: 0, openHandles: 0 });
  t.is(src.releasedUnderUse, 0);
  await cache.close(); // again: nothing left
  t.is(src.releases(), 4);
});

test('capacity must be at least 1 (0 means no cache: the caller does without it)', (t) => {
  t.throws(() => new OpenHandleCache(new FakeSource(), 0), { instanceOf: RangeError });
  t.throws(() => new OpenHandleCache(new FakeSource(), 1.5), { instanceOf: RangeError });
});
