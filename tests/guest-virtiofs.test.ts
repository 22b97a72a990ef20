// Boots the QEMU guest once with a vhost-user-fs device served by Debian's C virtiofsd
// and runs appliance/guest/virtiofs-probe.ts in it: the TypeScript virtio-fs driver,
// unchanged, on the virtio modern PCI transport, hugepage DMA memory and uio
// interrupts. The guest lists the shared folder and reads each file (copying and by
// DMA chunks); the test compares sizes and SHA-256s with the host's files.
import test from 'ava';
import { VIRTIOFSD_PATH, spawnVirtiofsd } from '../appliance/qemu/virtiofsd.js';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { type QemuExit, type QemuInstance, launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bundle = `${root}dist/bundles/virtiofs-probe.js`;
const addon = `${root}build/Release/tsvirtio.node`;

interface ProbeResult {
  tag: string;
  names: string[];
  files: Record<string, { size: number; sha256: string; dmaSha256: string; readMs: number }>;
  interrupts: number;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const ready = qemuAvailable() && existsSync(VIRTIOFSD_PATH) && existsSync(bundle) && existsSync(addon);
if (!ready) console.warn('guest-virtiofs: skipped (needs qemu-system-x86_64, /usr/lib/qemu/virtiofsd, `node build.mjs` output and the native addon)');

(ready ? test : test.skip)('the virtio-fs driver in the guest reads the host folder through virtiofsd', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'guest-virtiofs-'));
  const share = join(dir, 'share');
  mkdirSync(share);
  mkdirSync(join(share, 'sub'));
  const content: Record<string, Buffer> = {
    'hello.txt': Buffer.from('hello from the host\n'),
    'empty.txt': Buffer.alloc(0),
    'exactly-128k.bin': randomBytes(128 * 1024),
    'big.bin': randomBytes(1_500_000),
  };
  for (const [name, data] of Object.entries(content)) writeFileSync(join(share, name), data);
  const socket = join(dir, 'fs.sock');
  let virtiofsd: ChildProcess | null = null;
  let qemu: QemuInstance | null = null;
  try {
    const vfs = spawnVirtiofsd({ socketPath: socket, source: share });
    virtiofsd = vfs.child;
    await vfs.ready;
    const image = await buildNodeGuest({ main: bundle, files: [{ guest: '/app/tsvirtio.node', host: addon }] });
    qemu = launchQemu({
      kernel: image.kernel,
      initrd: image.initrd,
      append: image.append,
      virtiofs: { socket, tag: 'site' },
      timeoutMs: 5 * 60 * 1000, // safety net against a hung guest, not an assertion
    });
    const exit: QemuExit = await qemu.exited;
    const text = qemu.console();
    t.is(exit.guestStatus, 0, text.slice(-3000));
    t.regex(text, /1af4:105a -> \/dev\/uio\d+, virtio device 26, interrupts: uio\d+ INTx/);
    const line = text.split('\n').find((l) => l.startsWith('virtiofs-probe-result: '));
    if (line === undefined) return t.fail(`no result line:\n${text.slice(-3000)}`);
    const result = JSON.parse(line.slice('virtiofs-probe-result: '.length)) as ProbeResult;
    t.is(result.tag, 'site');
    t.deepEqual(result.names, [...Object.keys(content), 'sub'].sort());
    for (const [name, data] of Object.entries(content)) {
      const f = result.files[name];
      if (f === undefined) {
        t.fail(`${name} was not read`);
        continue;
      }
      t.is(f.size, data.length, name);
      t.is(f.sha256, sha256(data), `${name} (copied)`);
      t.is(f.dmaSha256, sha256(data), `${name} (DMA chunks)`);
    }
    t.false('sub' in result.files, 'directories are not read as files');
    t.true(result.interrupts > 0);
    t.log(`1.5 MB file read in ${result.files['big.bin']?.readMs} ms in the guest (TCG); ${result.interrupts} interrupts`);
  } finally {
    if (qemu?.running) await qemu.stop();
    if (virtiofsd && virtiofsd.exitCode === null && virtiofsd.signalCode === null) {
      const gone = new Promise((resolve) => virtiofsd!.once('exit', resolve));
      virtiofsd.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
