// The virtio-fs driver against Debian's C virtiofsd (from QEMU), without a VM: this
// process plays QEMU's vhost-user front-end (kernel/transport/vhost-user-frontend-
// transport.ts), so the driver's rings live in a memfd that virtiofsd maps.
// Skipped when /usr/lib/qemu/virtiofsd or the native addon is missing.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addonAvailable } from '../kernel/native/index.js';
import { VhostUserFrontendTransport } from '../kernel/transport/vhost-user-frontend-transport.js';
import { VirtioFsDriver, type VirtioFsDriverOptions } from '../drivers/virtio-fs/driver/index.js';
import { VIRTIO_ID_FS, encodeVirtioFsConfig } from '../drivers/virtio-fs/virtio-fs-config.js';

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const available = fs.existsSync(VIRTIOFSD) && addonAvailable() && process.getuid?.() === 0;
const maybe = available ? test : test.skip;

const FILES: Record<string, number> = {
  'empty.bin': 0,
  'one.bin': 1,
  'f4095.bin': 4095,
  'f4096.bin': 4096,
  'f4097.bin': 4097,
  'page133k.html': 133 * 1024,
  'big16m.bin': 16 * 1024 * 1024,
  'a/b/c/deep.txt': 777,
  'a/x.txt': 12,
};

let root = '';
test.before(() => {
  if (!available) return;
  root = fs.mkdtempSync(join(tmpdir(), 'virtiofsd-test-'));
  fs.mkdirSync(join(root, 'share'));
  for (const [rel, size] of Object.entries(FILES)) {
    fs.mkdirSync(join(root, 'share', rel, '..'), { recursive: true });
    fs.writeFileSync(join(root, 'share', rel), randomBytes(size));
  }
  fs.mkdirSync(join(root, 'share', 'emptydir'));
  fs.symlinkSync('f4096.bin', join(root, 'share', 'link-to-file'));
  fs.symlinkSync('/etc/passwd', join(root, 'share', 'escape-abs'));
});
test.after.always(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const share = (rel: string): string => join(root, 'share', rel);

let socketSeq = 0;

/**
 * Starts virtiofsd on the share, connects a driver and runs `body` with it. If virtiofsd
 * dies first, the test fails with its exit status and stderr (instead of waiting on
 * requests nobody will answer).
 */
async function withVirtiofsd(t: { teardown(fn: () => unknown): void }, opts: VirtioFsDriverOptions, body: (vfs: VirtioFsDriver) => Promise<void>): Promise<void> {
  const sock = join(root, `vfsd-${process.pid}-${socketSeq++}.sock`);
  const child: ChildProcess = spawn(VIRTIOFSD, [`--socket-path=${sock}`, '-o', `source=${join(root, 'share')}`, '-o', 'sandbox=chroot', '-o', 'cache=auto'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let stopping = false;
  let dead = false;
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    dead = true;
    resolve();
  }));
  const died = exited.then(() => {
    if (!stopping) throw new Error(`virtiofsd exited unexpectedly (${child.exitCode ?? child.signalCode}): ${stderr.trim().split('\n').slice(-8).join(' | ')}`);
  });
  died.catch(() => {});
  let transport: VhostUserFrontendTransport | null = null;
  let driver: VirtioFsDriver | null = null;
  t.teardown(async () => {
    try {
      if (!dead) await driver?.close(); // a dead back-end would never answer the FORGETs
    } finally {
      stopping = true;
      await transport?.close();
      child.kill('SIGTERM');
      await exited;
      fs.rmSync(sock, { force: true });
    }
  });
  const run = async (): Promise<void> => {
    // Wait for the socket (no deadline of our own: ava's timeout bounds the test).
    while (!fs.existsSync(sock)) {
      if (dead) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    transport = await VhostUserFrontendTransport.connect(sock, {
      deviceId: VIRTIO_ID_FS,
      config: encodeVirtioFsConfig({ tag: 'hostfs', numRequestQueues: 1 }),
      numQueues: 2,
      maxQueueSize: 128,
      memoryBytes: 64 << 20,
    });
    driver = await VirtioFsDriver.start(transport, opts);
    await body(driver);
  };
  await Promise.race([run(), died]);
}

maybe('virtiofsd: INIT, readFile of every file (SHA-256), readFileDma', (t) => withVirtiofsd(t, {}, async (vfs) => {
  t.true(vfs.protocolMinor >= 23);
  t.log(`FUSE 7.${vfs.protocolMinor}, max read ${vfs.maxRead}, init flags 0x${vfs.init!.flags.toString(16)}`);
  for (const rel of Object.keys(FILES)) {
    const data = await vfs.readFile(rel);
    t.is(sha256(data), sha256(fs.readFileSync(share(rel))), rel);
  }
  for (const rel of ['one.bin', 'page133k.html', 'big16m.bin']) {
    const f = await vfs.readFileDma(rel);
    try {
      const h = createHash('sha256');
      for (const c of f.chunks) h.update(c);
      t.is(h.digest('hex'), sha256(fs.readFileSync(share(rel))), rel);
    } finally {
      f.release();
    }
  }
  t.is(vfs.stats.badReplies, 0);
}));

maybe('virtiofsd: readdir, stat, symlinks, errors', (t) => withVirtiofsd(t, {}, async (vfs) => {
  for (const dir of ['/', 'a', 'a/b', 'emptydir']) t.deepEqual((await vfs.readdir(dir)).sort(), fs.readdirSync(share(dir)).sort(), dir);
  const typed = await vfs.readdir('/', { withFileTypes: true });
  t.true(typed.find((d) => d.name === 'a')!.isDirectory());
  t.true(typed.find((d) => d.name === 'link-to-file')!.isSymbolicLink());
  for (const rel of Object.keys(FILES)) t.is((await vfs.stat(rel)).size, FILES[rel]!, rel);
  t.true((await vfs.lstat('link-to-file')).isSymbolicLink());
  t.is((await vfs.stat('link-to-file')).size, 4096);
  t.is(await vfs.readlink('link-to-file'), 'f4096.bin');
  await t.throwsAsync(vfs.readFile('escape-abs'), { code: 'ENOENT' });
  t.like(await t.throwsAsync(vfs.readFile('nope')), { code: 'ENOENT', syscall: 'open', path: 'nope', errno: -2 });
  await t.throwsAsync(vfs.readdir('one.bin'), { code: 'ENOTDIR' });
  await t.throwsAsync(vfs.stat('one.bin/x'), { code: 'ENOTDIR' });
  await t.throwsAsync(vfs.readFile('a'), { code: 'EISDIR' });
  t.true((await vfs.statfs()).bsize > 0);
}));

maybe('virtiofsd: 64 concurrent reads through a small queue; FORGET on eviction', (t) => withVirtiofsd(t, { queueSize: 8, chunkSize: 32 * 1024, chunkCount: 8, cacheEntries: 3 }, async (vfs) => {
  const names = ['one.bin', 'f4095.bin', 'f4096.bin', 'f4097.bin', 'page133k.html', 'a/b/c/deep.txt', 'a/x.txt'];
  const want = new Map(names.map((n) => [n, sha256(fs.readFileSync(share(n)))]));
  const jobs = Array.from({ length: 64 }, (_, i) => names[i % names.length]!);
  const got = await Promise.all(jobs.map(async (n) => sha256(await vfs.readFile(n))));
  got.forEach((h, i) => t.is(h, want.get(jobs[i]!)!, jobs[i]!));
  t.true(vfs.stats.backlogged > 0);
  t.true(vfs.stats.forgetsSent > 0);
  // virtiofsd still answers after the forgets.
  t.is((await vfs.readFile('f4097.bin')).length, 4097);
  const h = await vfs.open('page133k.html');
  try {
    const plain = Buffer.alloc(1000);
    t.is((await h.read(plain, 0, 1000, 5000)).bytesRead, 1000);
    t.true(plain.equals(fs.readFileSync(share('page133k.html')).subarray(5000, 6000)));
  } finally {
    await h.close();
  }
}));
