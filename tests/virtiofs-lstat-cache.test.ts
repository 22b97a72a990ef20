// The driver's synchronous cache path (lstatCached / statCached, which lstat and stat
// try first) against the in-process device in the same thread, whose LOOKUP and
// GETATTR replies get the entry_valid / attr_valid each test asks for: the same stats
// as the request path, null whenever a request or an error is due, no request on a
// hit, LRU order kept. Then VirtioFsSiteFiles.stat on top of it.
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import type { DescriptorChain } from '../kernel/virtqueue/device-queue.js';
import { VirtioFsDevice } from '../drivers/virtio-fs/device/virtio-fs-device.js';
import { FsError, type FsStats, VirtioFsDriver, type VirtioFsDriverOptions } from '../drivers/virtio-fs/driver/index.js';
import { FuseOpcode } from '../drivers/virtio-fs/fuse-protocol.js';
import { writeU64 } from '../drivers/virtio-fs/fuse-codec.js';
import { VirtioFsSiteFiles } from '../appliance/webserver/files/virtio-fs-site-files.js';

let root = '';

test.before(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'virtiofs-lstat-cache-'));
  fs.mkdirSync(join(root, 'a/b'), { recursive: true });
  fs.writeFileSync(join(root, 'one.bin'), 'x');
  fs.writeFileSync(join(root, 'two.bin'), 'yy');
  fs.writeFileSync(join(root, 'three.bin'), 'zzz');
  fs.writeFileSync(join(root, 'a/x.txt'), 'hello');
  fs.writeFileSync(join(root, 'a/b/deep.txt'), 'deep');
  fs.symlinkSync('one.bin', join(root, 'link-to-file'));
  fs.symlinkSync('a/b', join(root, 'link-to-dir'));
});

test.after.always(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const IN_HEADER = 40;
const OUT_HEADER = 16;

/** The real device, with entry_valid / attr_valid (seconds) chosen per LOOKUP name, and a log of opcodes. */
class TimedFsDevice extends VirtioFsDevice {
  validity: (name: string) => { entry: number; attr: number } = () => ({ entry: 3600, attr: 3600 });
  getattrValid = 3600;
  readonly opcodes: number[] = [];

  override serve(queueIndex: number, chain: DescriptorChain): number {
    const req = Buffer.alloc(Math.min(chain.readableLength, 4096));
    chain.read(0, req, 0, req.length);
    const opcode = req.length >= 8 ? req.readUInt32LE(4) : -1;
    const n = super.serve(queueIndex, chain);
    this.opcodes.push(opcode);
    if (n <= OUT_HEADER || chain.writableCount === 0) return n;
    const seg = chain.segment(chain.readableCount);
    const dv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
    if (dv.getInt32(4, true) !== 0) return n;
    if (opcode === FuseOpcode.LOOKUP) {
      const name = req.subarray(IN_HEADER, req.indexOf(0, IN_HEADER)).toString();
      const v = this.validity(name);
      writeU64(dv, OUT_HEADER + 16, v.entry);
      writeU64(dv, OUT_HEADER + 24, v.attr);
      dv.setUint32(OUT_HEADER + 32, 0, true);
      dv.setUint32(OUT_HEADER + 36, 0, true);
    } else if (opcode === FuseOpcode.GETATTR) {
      writeU64(dv, OUT_HEADER, this.getattrValid);
      dv.setUint32(OUT_HEADER + 8, 0, true);
    }
    return n;
  }
}

async function withFs(t: ExecutionContext, opts: VirtioFsDriverOptions = {}): Promise<{ vfs: VirtioFsDriver; dev: TimedFsDevice }> {
  const dev = new TimedFsDevice({ root, tag: 'lstat' });
  const transport = InProcessTransport.sameThread(dev, { memoryBytes: 16 << 20 });
  const vfs = await VirtioFsDriver.start(transport, opts);
  t.teardown(async () => {
    try {
      await vfs.close();
    } finally {
      await transport.close();
    }
  });
  return { vfs, dev };
}

/** Every field of an FsStats, as a plain object. */
const fields = (s: FsStats): Record<string, number> => ({
  dev: s.dev, ino: s.ino, mode: s.mode, nlink: s.nlink, uid: s.uid, gid: s.gid, rdev: s.rdev, size: s.size, blksize: s.blksize, blocks: s.blocks,
  atimeMs: s.atimeMs, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, birthtimeMs: s.birthtimeMs,
});

test('lstatCached returns what lstat returned, with no request, counting one cache hit per component', async (t) => {
  const { vfs, dev } = await withFs(t);
  const cases: Array<[string, number]> = [
    ['/', 0],
    ['one.bin', 1],
    ['/a', 1],
    ['/a/x.txt', 2],
    ['a/b/deep.txt', 3],
    ['/a/b/', 2],
    ['link-to-file', 1], // the link itself (lstat)
    ['link-to-dir', 1],
    ['a/./b/../x.txt', 2], // spelled otherwise: normalized as resolve() does
    ['//a//x.txt', 2],
    ['one.bin/../a/x.txt', 2],
  ];
  for (const [p, components] of cases) {
    const slow = await vfs.lstat(p); // cold for most: LOOKUPs (and GETATTR for '/')
    const requests = vfs.stats.requests;
    const opcodes = dev.opcodes.length;
    const hits = vfs.stats.cacheHits;
    const fast = vfs.lstatCached(p);
    t.not(fast, null, p);
    t.deepEqual(fields(fast!), fields(slow), p);
    t.is(vfs.stats.cacheHits - hits, components, `${p}: cache hits`);
    t.deepEqual(fields(await vfs.lstat(p)), fields(slow), `${p}: lstat again`);
    t.is(vfs.stats.requests, requests, `${p}: no request`);
    t.is(dev.opcodes.length, opcodes, `${p}: nothing reached the device`);
  }
  const host = fs.lstatSync(join(root, 'a/x.txt'));
  const mine = vfs.lstatCached('/a/x.txt')!;
  t.is(mine.ino, host.ino);
  t.is(mine.size, host.size);
  t.is(mine.mode, host.mode);
  t.true(vfs.lstatCached('link-to-dir')!.isSymbolicLink());
  t.true(vfs.lstatCached('/')!.isDirectory());
});

test('statCached follows no link: null for a link anywhere, the stats otherwise', async (t) => {
  const { vfs } = await withFs(t);
  const target = await vfs.stat('link-to-file');
  t.true(target.isFile());
  t.is(vfs.statCached('link-to-file'), null);
  t.deepEqual(fields((await vfs.stat('link-to-file'))), fields(target));
  await vfs.stat('a/x.txt');
  const requests = vfs.stats.requests;
  t.deepEqual(fields(vfs.statCached('a/x.txt')!), fields(await vfs.lstat('a/x.txt')));
  t.is(vfs.stats.requests, requests);
});

test('a hit returns the same frozen FsStats until the attributes change', async (t) => {
  const { vfs, dev } = await withFs(t);
  dev.validity = (name) => (name === 'x.txt' ? { entry: 3600, attr: 0 } : { entry: 3600, attr: 3600 });
  const first = await vfs.lstat('one.bin');
  t.is(vfs.lstatCached('one.bin'), first);
  t.is(await vfs.lstat('one.bin'), first);
  t.true(Object.isFrozen(first));
  // Attributes that expire at once: each lstat does GETATTR, and builds new stats.
  dev.getattrValid = 0;
  const a1 = await vfs.lstat('a/x.txt');
  const a2 = await vfs.lstat('a/x.txt');
  t.not(a1, a2);
  t.deepEqual(fields(a1), fields(a2));
});

test('lstatCached is null once the entry expired; lstat then looks it up again', async (t) => {
  const { vfs, dev } = await withFs(t);
  dev.validity = (name) => (name === 'x.txt' ? { entry: 0, attr: 3600 } : { entry: 3600, attr: 3600 });
  const slow = await vfs.lstat('a/x.txt');
  t.is(vfs.lstatCached('a/x.txt'), null);
  t.not(vfs.lstatCached('a'), null, 'the directory entry is still valid');
  const lookups = vfs.stats.lookups;
  const opcodes = dev.opcodes.length;
  t.deepEqual(fields(await vfs.lstat('a/x.txt')), fields(slow));
  t.is(vfs.stats.lookups - lookups, 1);
  t.deepEqual(dev.opcodes.slice(opcodes), [FuseOpcode.LOOKUP]);
});

test('lstatCached is null when a directory component expired', async (t) => {
  const { vfs, dev } = await withFs(t);
  dev.validity = (name) => (name === 'a' ? { entry: 0, attr: 3600 } : { entry: 3600, attr: 3600 });
  await vfs.lstat('a/b/deep.txt');
  t.is(vfs.lstatCached('a/b/deep.txt'), null);
  t.is(vfs.lstatCached('a/b'), null);
  const opcodes = dev.opcodes.length;
  await vfs.lstat('a/b/deep.txt');
  t.deepEqual(dev.opcodes.slice(opcodes), [FuseOpcode.LOOKUP], 'only a is looked up again');
});

test('lstatCached is null once the attributes expired (entry still valid); lstat sends GETATTR only', async (t) => {
  const { vfs, dev } = await withFs(t);
  dev.validity = (name) => (name === 'x.txt' ? { entry: 3600, attr: 0 } : { entry: 3600, attr: 3600 });
  dev.getattrValid = 0;
  const slow = await vfs.lstat('a/x.txt'); // LOOKUP, then GETATTR (the LOOKUP's attributes expired at once)
  t.is(vfs.lstatCached('a/x.txt'), null);
  let opcodes = dev.opcodes.length;
  t.deepEqual(fields(await vfs.lstat('a/x.txt')), fields(slow));
  t.deepEqual(dev.opcodes.slice(opcodes), [FuseOpcode.GETATTR]);
  t.is(vfs.lstatCached('a/x.txt'), null);
  // A GETATTR reply with attr_valid 3600 makes them fresh again.
  dev.getattrValid = 3600;
  opcodes = dev.opcodes.length;
  await vfs.lstat('a/x.txt');
  t.deepEqual(dev.opcodes.slice(opcodes), [FuseOpcode.GETATTR]);
  t.deepEqual(fields(vfs.lstatCached('a/x.txt')!), fields(slow));
  // The root's attributes start expired: '/' needs one GETATTR first.
  t.is(vfs.lstatCached('/'), null);
  await vfs.lstat('/');
  t.true(vfs.lstatCached('/')!.isDirectory());
});

test('lstatCached is null for a missing component and for a link to follow', async (t) => {
  const { vfs } = await withFs(t);
  t.is(vfs.lstatCached('nope.txt'), null);
  await t.throwsAsync(vfs.lstat('nope.txt'), { code: 'ENOENT' });
  t.is(vfs.lstatCached('nope.txt'), null, 'no negative entries');
  t.is(vfs.lstatCached('a/x.txt'), null, 'never looked up');
  await vfs.lstat('a'); // a cached, a/x.txt not
  t.is(vfs.lstatCached('a/x.txt'), null);
  // A link as a directory component: resolve() follows it, the cache path does not.
  const viaLink = await vfs.lstat('link-to-dir/deep.txt');
  t.is(viaLink.size, 4);
  t.is(vfs.lstatCached('link-to-dir/deep.txt'), null);
  t.not(vfs.lstatCached('link-to-dir'), null);
  t.deepEqual(fields(await vfs.lstat('link-to-dir/deep.txt')), fields(viaLink));
});

test('a cached file used as a directory: lstatCached is null, lstat fails with ENOTDIR as before, without a request', async (t) => {
  const { vfs } = await withFs(t);
  await vfs.lstat('one.bin');
  for (const p of ['one.bin/x', '/one.bin/x/y']) {
    t.is(vfs.lstatCached(p), null, p);
    t.is(vfs.statCached(p), null, p);
  }
  const requests = vfs.stats.requests;
  const e = await t.throwsAsync(vfs.lstat('one.bin/x'));
  t.true(e instanceof FsError);
  t.like(e, { code: 'ENOTDIR', syscall: 'lstat', path: 'one.bin/x' });
  t.is(e!.message, "ENOTDIR: not a directory, lstat 'one.bin/x'");
  t.like(await t.throwsAsync(vfs.stat('/one.bin/x/y')), { code: 'ENOTDIR', syscall: 'stat', path: '/one.bin/x/y' });
  t.is(vfs.stats.requests, requests);
});

test('entries left below a name that became a file or a link are not used', async (t) => {
  const { vfs, dev } = await withFs(t);
  for (const d of ['was-dir-file', 'was-dir-link']) {
    fs.mkdirSync(join(root, d));
    fs.writeFileSync(join(root, d, 'f'), 'old');
  }
  // The directories' entries expire at once, their children's do not.
  let dirEntry = 0;
  dev.validity = (name) => (name.startsWith('was-dir') ? { entry: dirEntry, attr: 3600 } : { entry: 3600, attr: 3600 });
  await vfs.lstat('was-dir-file/f');
  await vfs.lstat('was-dir-link/f');
  fs.rmSync(join(root, 'was-dir-file'), { recursive: true });
  fs.writeFileSync(join(root, 'was-dir-file'), 'now a file');
  fs.rmSync(join(root, 'was-dir-link'), { recursive: true });
  fs.symlinkSync('a', join(root, 'was-dir-link'));
  dirEntry = 3600;
  t.true((await vfs.lstat('was-dir-file')).isFile());
  t.true((await vfs.lstat('was-dir-link')).isSymbolicLink());
  t.is(vfs.lstatCached('was-dir-file/f'), null);
  t.is(vfs.lstatCached('was-dir-link/f'), null);
  await t.throwsAsync(vfs.lstat('was-dir-file/f'), { code: 'ENOTDIR' });
  await t.throwsAsync(vfs.lstat('was-dir-link/f'), { code: 'ENOENT' }); // a/f
  t.is((await vfs.lstat('was-dir-link/x.txt')).size, 5);
});

test('hits keep the LRU order and leave nothing pinned: the entries they used get evicted in turn', async (t) => {
  const { vfs } = await withFs(t, { cacheEntries: 2 });
  await vfs.lstat('one.bin');
  await vfs.lstat('two.bin');
  for (let i = 0; i < 10; i++) t.not(vfs.lstatCached('one.bin'), null);
  await vfs.lstat('three.bin'); // evicts two.bin, the least recently used
  t.is(vfs.cachedEntries, 2);
  t.is(vfs.lstatCached('two.bin'), null);
  t.not(vfs.lstatCached('one.bin'), null);
  t.not(vfs.lstatCached('three.bin'), null); // one.bin is the oldest now
  await vfs.lstat('two.bin');
  t.is(vfs.lstatCached('one.bin'), null, 'hits did not pin one.bin');
  t.is(vfs.cachedEntries, 2);
  t.true(vfs.stats.cacheEvictions >= 2);
});

test('after close: lstatCached is null, lstat is refused', async (t) => {
  const { vfs } = await withFs(t);
  await vfs.lstat('one.bin');
  await vfs.close();
  t.is(vfs.lstatCached('one.bin'), null);
  await t.throwsAsync(vfs.lstat('one.bin'), { code: 'ERR_VIRTIO_FS_CLOSED' });
});

test('VirtioFsSiteFiles.stat answers cached paths from lstatCached, others through lstat', async (t) => {
  const { vfs } = await withFs(t);
  const calls: string[] = [];
  const spy = {
    lstat: (p: string) => (calls.push(`lstat ${p}`), vfs.lstat(p)),
    lstatCached: (p: string) => (calls.push(`cached ${p}`), vfs.lstatCached(p)),
    open: (p: string) => vfs.open(p),
  };
  const site = new VirtioFsSiteFiles(spy, { root: '/a' });
  t.deepEqual(await site.stat('/x.txt'), { kind: 'file', size: 5, mtimeMs: (await vfs.lstat('a/x.txt')).mtimeMs });
  calls.length = 0;
  t.like(await site.stat('/x.txt'), { kind: 'file', size: 5 });
  t.like(await site.stat('/b'), { kind: 'directory' });
  t.deepEqual(calls, ['cached /a/x.txt', 'cached /a/b', 'lstat /a/b']);
  t.is(await site.stat('/missing'), null);
  t.is(await site.stat('/x.txt/y'), null, 'ENOTDIR is a 404');
  await vfs.lstat('/link-to-file');
  t.like(await new VirtioFsSiteFiles(vfs).stat('/link-to-file'), { kind: 'other' });
  // Without lstatCached (any lstat/open provider), lstat alone.
  const plain = new VirtioFsSiteFiles({ lstat: (p) => vfs.lstat(p), open: (p) => vfs.open(p) }, { root: '/a/' });
  t.like(await plain.stat('/x.txt'), { kind: 'file', size: 5 });
});

test('VirtioFsSiteFiles refuses paths that are not site paths', async (t) => {
  const { vfs } = await withFs(t);
  const site = new VirtioFsSiteFiles(vfs, { root: '/a' });
  for (const p of ['', 'x.txt', '/..', '/../one.bin', '/b/../x.txt', '/./x.txt', '/b/.', '/x.txt\0', '/b/..']) {
    await t.throwsAsync(site.stat(p), { message: /^not a site path/ }, JSON.stringify(p));
    await t.throwsAsync(site.open(p), { message: /^not a site path/ }, JSON.stringify(p));
  }
  for (const p of ['/x.txt', '/b//deep.txt', '/b/', '/...', '/..x', '/.x', '/b/deep.txt']) {
    await t.notThrowsAsync(site.stat(p), JSON.stringify(p));
  }
});
