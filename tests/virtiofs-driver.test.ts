// The virtio-fs driver against the in-process device in a worker thread, serving a
// temporary host tree: contents (SHA-256), listings, stat, errors, queuing, zero copy
// and FORGET; packed rings by default, split ones when asked for.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VirtioFsDriver, type VirtioFsDriverOptions } from '../drivers/virtio-fs/driver/index.js';
import type { VirtioFsDeviceStats } from '../drivers/virtio-fs/device/virtio-fs-device.js';

const deviceModule = new URL('../drivers/virtio-fs/device/worker-device.js', import.meta.url);

const FILES: Record<string, number> = {
  'empty.bin': 0,
  'one.bin': 1,
  'f4095.bin': 4095,
  'f4096.bin': 4096,
  'f4097.bin': 4097,
  'page133k.html': 133 * 1024,
  'big16m.bin': 16 * 1024 * 1024,
  'a/b/c/deep.txt': 777,
  'a/b/sibling.txt': 5000,
  'a/x.txt': 12,
};

let root = '';

test.before(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'virtiofs-test-'));
  for (const [rel, size] of Object.entries(FILES)) {
    fs.mkdirSync(join(root, rel, '..'), { recursive: true });
    fs.writeFileSync(join(root, rel), randomBytes(size));
  }
  fs.mkdirSync(join(root, 'emptydir'));
  fs.symlinkSync('f4096.bin', join(root, 'link-to-file'));
  fs.symlinkSync('a/b', join(root, 'link-to-dir'));
  fs.symlinkSync('/etc/passwd', join(root, 'escape-abs'));
  fs.symlinkSync('../../../../../../../../etc/passwd', join(root, 'escape-rel'));
});

test.after.always(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function withFs(t: { teardown(fn: () => unknown): void }, opts: VirtioFsDriverOptions = {}, memoryBytes = 64 << 20): Promise<{ fs: VirtioFsDriver; transport: InProcessTransport }> {
  const transport = await InProcessTransport.worker({ module: deviceModule, options: { root, tag: 'testfs' } }, { memoryBytes });
  let driver: VirtioFsDriver | null = null;
  t.teardown(async () => {
    try {
      await driver?.close();
    } finally {
      await transport.close();
    }
  });
  driver = await VirtioFsDriver.start(transport, opts);
  return { fs: driver, transport };
}

function deviceStats(transport: InProcessTransport): Promise<VirtioFsDeviceStats> {
  return new Promise((resolve) => {
    transport.once('device-message', (m: { stats: VirtioFsDeviceStats }) => resolve(m.stats));
    transport.postToDevice({ type: 'stats' });
  });
}

test('start negotiates FUSE and reads the tag', async (t) => {
  const { fs: vfs } = await withFs(t);
  t.is(vfs.tag, 'testfs');
  t.is(vfs.protocolMinor, 31);
  t.true(vfs.maxRead > 0);
});

for (const ring of ['split', 'packed'] as const) {
  test(`${ring} ring (asked for): readFile of every file and 16 concurrent reads, SHA-256 equal to the host copy`, async (t) => {
    const { fs: vfs } = await withFs(t, { ring, queueSize: 16 });
    t.is(vfs.ringLayout, ring);
    for (const rel of Object.keys(FILES)) t.is(sha256(await vfs.readFile('/' + rel)), sha256(fs.readFileSync(join(root, rel))), rel);
    const many = await Promise.all(Array.from({ length: 16 }, (_, i) => vfs.readFile(i % 2 ? '/page133k.html' : '/f4097.bin')));
    many.forEach((d, i) => t.is(sha256(d), sha256(fs.readFileSync(join(root, i % 2 ? 'page133k.html' : 'f4097.bin')))));
  });
}

test('readFile: SHA-256 of every file equals the host copy', async (t) => {
  const { fs: vfs } = await withFs(t);
  t.is(vfs.ringLayout, 'packed', 'the packed layout when the device offers it');
  for (const rel of Object.keys(FILES)) {
    const data = await vfs.readFile('/' + rel);
    t.is(data.length, FILES[rel], rel);
    t.is(sha256(data), sha256(fs.readFileSync(join(root, rel))), rel);
  }
  t.is(await vfs.readFile('a/x.txt', 'latin1'), fs.readFileSync(join(root, 'a/x.txt'), 'latin1'));
});

test('readFileDma: file bytes land in DMA chunks, no copy', async (t) => {
  const { fs: vfs, transport } = await withFs(t);
  for (const rel of ['empty.bin', 'one.bin', 'f4097.bin', 'page133k.html', 'big16m.bin']) {
    const before = vfs.stats.copiedBytes;
    const file = await vfs.readFileDma(rel);
    try {
      t.is(file.size, FILES[rel], rel);
      const h = createHash('sha256');
      for (const c of file.chunks) {
        t.true(transport.dma.addressOf(c) >= 0, `${rel}: chunk in DMA memory`);
        h.update(c);
      }
      t.is(h.digest('hex'), sha256(fs.readFileSync(join(root, rel))), rel);
      t.is(vfs.stats.copiedBytes, before, `${rel}: no bytes copied`);
    } finally {
      file.release();
    }
  }
});

test('readFileDma: concurrent large files wait for DMA memory instead of failing', async (t) => {
  const { fs: vfs } = await withFs(t, {}, 48 << 20); // room for two 16 MiB files at a time
  const want = sha256(fs.readFileSync(join(root, 'big16m.bin')));
  const got = await Promise.all(
    Array.from({ length: 5 }, async () => {
      const f = await vfs.readFileDma('big16m.bin');
      const h = createHash('sha256');
      for (const c of f.chunks) h.update(c);
      await new Promise((r) => setImmediate(r)); // hold it a little, like a socket would
      f.release();
      return h.digest('hex');
    }),
  );
  for (const h of got) t.is(h, want);
});

test('readdir equals the host listing', async (t) => {
  const { fs: vfs } = await withFs(t);
  for (const dir of ['/', 'a', 'a/b', 'a/b/c', 'emptydir', 'link-to-dir']) {
    const got = (await vfs.readdir(dir)).sort();
    t.deepEqual(got, fs.readdirSync(join(root, dir)).sort(), dir);
  }
  const typed = await vfs.readdir('/', { withFileTypes: true });
  const host = fs.readdirSync(root, { withFileTypes: true });
  for (const d of host) {
    const mine = typed.find((x) => x.name === d.name);
    t.truthy(mine, d.name);
    t.is(mine!.isFile(), d.isFile(), d.name);
    t.is(mine!.isDirectory(), d.isDirectory(), d.name);
    t.is(mine!.isSymbolicLink(), d.isSymbolicLink(), d.name);
  }
});

test('stat, lstat, readlink: sizes and types', async (t) => {
  const { fs: vfs } = await withFs(t);
  for (const rel of Object.keys(FILES)) {
    const st = await vfs.stat(rel);
    const host = fs.statSync(join(root, rel));
    t.is(st.size, host.size, rel);
    t.true(st.isFile(), rel);
    t.is(st.mode, host.mode, rel);
    t.is(st.ino, host.ino, rel);
    t.is(Math.floor(st.mtimeMs), Math.floor(host.mtimeMs), rel);
  }
  t.true((await vfs.stat('a/b')).isDirectory());
  t.true((await vfs.stat('/')).isDirectory());
  const link = await vfs.lstat('link-to-file');
  t.true(link.isSymbolicLink());
  t.is(link.size, 'f4096.bin'.length);
  const target = await vfs.stat('link-to-file');
  t.true(target.isFile());
  t.is(target.size, 4096);
  t.is(await vfs.readlink('link-to-file'), 'f4096.bin');
  t.is((await vfs.stat('link-to-dir/c/deep.txt')).size, 777);
  t.is(sha256(await vfs.readFile('link-to-dir/sibling.txt')), sha256(fs.readFileSync(join(root, 'a/b/sibling.txt'))));
  const sfs = await vfs.statfs();
  t.true(sfs.bsize > 0);
});

test('errors: ENOENT, ENOTDIR, EISDIR, EINVAL, like Node', async (t) => {
  const { fs: vfs } = await withFs(t);
  const e1 = await t.throwsAsync(vfs.readFile('/nope.txt'));
  t.like(e1, { code: 'ENOENT', errno: -2, syscall: 'open', path: '/nope.txt' });
  t.regex(e1!.message, /^ENOENT: no such file or directory, open '\/nope.txt'$/);
  await t.throwsAsync(vfs.stat('a/missing/deeper'), { code: 'ENOENT' });
  await t.throwsAsync(vfs.readdir('one.bin'), { code: 'ENOTDIR' });
  const e2 = await t.throwsAsync(vfs.stat('one.bin/x'));
  t.like(e2, { code: 'ENOTDIR', syscall: 'stat', path: 'one.bin/x' });
  await t.throwsAsync(vfs.readFile('a'), { code: 'EISDIR' });
  await t.throwsAsync(vfs.readlink('one.bin'), { code: 'EINVAL' });
  await t.throwsAsync(vfs.open('one.bin', 'w'), { code: 'EROFS' });
  // Symlinks resolve inside the served tree: these lead nowhere, not to the host's /etc.
  await t.throwsAsync(vfs.readFile('escape-abs'), { code: 'ENOENT' });
  await t.throwsAsync(vfs.readFile('escape-rel'), { code: 'ENOENT' });
  t.is(await vfs.readlink('escape-abs'), '/etc/passwd');
  // The driver keeps working after errors.
  t.is((await vfs.readFile('one.bin')).length, 1);
});

test('64 concurrent reads through a queue that holds far fewer: queued, never failed', async (t) => {
  const { fs: vfs } = await withFs(t, { queueSize: 8, chunkSize: 16 * 1024, chunkCount: 8 });
  t.is(vfs.queueSize, 8);
  const names = ['one.bin', 'f4095.bin', 'f4096.bin', 'f4097.bin', 'page133k.html', 'a/b/c/deep.txt', 'a/b/sibling.txt', 'a/x.txt'];
  const want = new Map(names.map((n) => [n, sha256(fs.readFileSync(join(root, n)))]));
  const jobs = Array.from({ length: 64 }, (_, i) => names[i % names.length]!);
  const got = await Promise.all(jobs.map(async (n) => sha256(await vfs.readFile(n))));
  got.forEach((h, i) => t.is(h, want.get(jobs[i]!)!, jobs[i]!));
  const s = vfs.stats;
  t.true(s.backlogged > 0, `backlogged ${s.backlogged}`);
  t.true(s.maxInFlight <= 4, `max in flight ${s.maxInFlight} with 8 descriptors`);
  t.is(s.badReplies, 0);
});

test('handle.read: one copy into a plain Buffer, none into a DMA buffer', async (t) => {
  const { fs: vfs, transport } = await withFs(t);
  const host = fs.readFileSync(join(root, 'page133k.html'));
  const h = await vfs.open('page133k.html');
  try {
    const plain = Buffer.alloc(10000);
    const s0 = vfs.stats;
    const r1 = await h.read(plain, 100, 5000, 4000);
    t.is(r1.bytesRead, 5000);
    t.true(plain.subarray(100, 5100).equals(host.subarray(4000, 9000)));
    const s1 = vfs.stats;
    t.is(s1.copiedReads - s0.copiedReads, 1);
    t.is(s1.copiedBytes - s0.copiedBytes, 5000);
    t.is(s1.zeroCopyReads, s0.zeroCopyReads);

    const dma = transport.dma.allocate(8192);
    try {
      const r2 = await h.read(dma, 0, 8192, 120 * 1024);
      t.is(r2.bytesRead, 8192);
      t.true(Buffer.from(dma).equals(host.subarray(120 * 1024, 120 * 1024 + 8192)));
      const s2 = vfs.stats;
      t.is(s2.zeroCopyReads - s1.zeroCopyReads, 1);
      t.is(s2.zeroCopyBytes - s1.zeroCopyBytes, 8192);
      t.is(s2.copiedBytes, s1.copiedBytes, 'no copy for a DMA buffer');
      // Sequential reads from the handle position, up to end of file.
      const r3 = await h.read(dma, 0, 8192, host.length - 100);
      t.is(r3.bytesRead, 100);
      t.is((await h.read(dma, 0, 8192, host.length)).bytesRead, 0);
    } finally {
      transport.dma.free(dma);
    }
    const a = Buffer.alloc(3000);
    const b = Buffer.alloc(3000);
    await h.read(a);
    await h.read(b);
    t.true(Buffer.concat([a, b]).equals(host.subarray(0, 6000)));
    t.is((await h.stat()).size, host.length);
  } finally {
    await h.close();
  }
  await t.throwsAsync(h.read(Buffer.alloc(1)), { code: 'EBADF' });
});

test('FORGET: evictions from a bounded cache and close forget every lookup', async (t) => {
  const { fs: vfs, transport } = await withFs(t, { cacheEntries: 2 });
  const names = ['one.bin', 'f4095.bin', 'f4096.bin', 'f4097.bin', 'a/x.txt', 'a/b/sibling.txt'];
  for (const n of names) await vfs.stat(n);
  t.true(vfs.cachedEntries <= 2, `cache holds ${vfs.cachedEntries}`);
  t.true(vfs.stats.cacheEvictions >= 4);
  t.true(vfs.stats.forgetsSent >= 4);
  // Let the forgets reach the device, then compare its books with ours.
  let dev = await deviceStats(transport);
  for (let i = 0; i < 100 && dev.forgets < vfs.stats.forgetsSent; i++) {
    await new Promise((r) => setImmediate(r));
    dev = await deviceStats(transport);
  }
  t.is(dev.forgets, vfs.stats.forgetsSent);
  t.is(dev.forgottenLookups, vfs.stats.forgottenLookups);
  t.true(dev.nodes <= 1 + 2, `device keeps ${dev.nodes} nodes`);
  const before = vfs.stats;
  await vfs.close();
  dev = await deviceStats(transport);
  t.is(dev.forgottenLookups, dev.lookupsGranted, 'every lookup granted was forgotten');
  t.is(dev.forgets, vfs.stats.forgetsSent);
  t.true(vfs.stats.forgetRequests - before.forgetRequests < vfs.stats.forgetsSent - before.forgetsSent, 'close batches its forgets (BATCH_FORGET)');
  t.is(dev.openHandles, 0);
  await t.throwsAsync(vfs.stat('one.bin'), { code: 'ERR_VIRTIO_FS_CLOSED' });
});

test('open handles pin their inode; close releases handles', async (t) => {
  const { fs: vfs, transport } = await withFs(t, { cacheEntries: 1 });
  const h = await vfs.open('f4097.bin');
  for (const n of ['one.bin', 'f4095.bin', 'a/x.txt']) await vfs.stat(n);
  // The handle's node must still be alive on the device.
  const buf = Buffer.alloc(4097);
  t.is((await h.read(buf, 0, 4097, 0)).bytesRead, 4097);
  t.true(buf.equals(fs.readFileSync(join(root, 'f4097.bin'))));
  await vfs.close(); // closes h too
  t.true(h.closed);
  const dev = await deviceStats(transport);
  t.is(dev.openHandles, 0);
  t.is(dev.forgottenLookups, dev.lookupsGranted);
});

test('close() during reads: waits for them, then forgets everything; later calls are refused', async (t) => {
  const { fs: vfs, transport } = await withFs(t, { queueSize: 8, chunkCount: 4 });
  const reads = Array.from({ length: 12 }, (_, i) => vfs.readFile(i % 2 ? 'page133k.html' : 'a/b/sibling.txt'));
  const closed = vfs.close();
  const results = await Promise.allSettled(reads);
  await closed;
  for (const r of results) {
    if (r.status === 'rejected') t.true(['ERR_VIRTIO_FS_CLOSED', 'EBADF'].includes((r.reason as { code?: string }).code ?? ''), String(r.reason));
  }
  await t.throwsAsync(vfs.readdir('/'), { code: 'ERR_VIRTIO_FS_CLOSED' });
  const dev = await deviceStats(transport);
  t.is(dev.openHandles, 0);
  t.is(dev.forgottenLookups, dev.lookupsGranted);
});
