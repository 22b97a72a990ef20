// Boots the QEMU guest once per machine with a vhost-user-fs device served by Debian's C
// virtiofsd and runs appliance/guest/virtiofs-probe.ts in it: the TypeScript virtio-fs
// driver, unchanged, on the machine's transport (virtio-mmio on microvm, modern PCI on
// q35), hugepage DMA memory and uio interrupts. The guest lists the shared folder and
// reads each file (copying and by DMA chunks); the test compares sizes and SHA-256s
// with the host's files.
import test from 'ava';
import { VIRTIOFSD_PATH } from '../appliance/qemu/virtiofsd.js';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { QemuExit } from '../appliance/qemu/launch.js';
import { ADDON, Cleanup, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest, resultLine, startVirtiofsd } from './support/qemu-guest.js';

const bundle = bundlePath('virtiofs-probe.js');

interface ProbeResult {
  tag: string;
  names: string[];
  files: Record<string, { size: number; sha256: string; dmaSha256: string; readMs: number }>;
  interrupts: number;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const guestTest = guestTestsReady('guest-virtiofs', [VIRTIOFSD_PATH, bundle, ADDON]) ? test.serial : test.skip;

for (const machine of MACHINES) {
  guestTest(`${machine}: the virtio-fs driver in the guest reads the host folder through virtiofsd`, async (t) => {
    const cleanup = new Cleanup();
    try {
      const dir = cleanup.tempDir('guest-virtiofs-');
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
      await startVirtiofsd(cleanup, { socketPath: socket, source: share });
      const qemu = await launchGuest(machine, { main: bundle, virtiofs: { socket, tag: 'site' }, timeoutMs: 5 * 60 * 1000 }, cleanup);
      const exit: QemuExit = await qemu.exited;
      const text = qemu.console();
      t.is(exit.guestStatus, 0, text.slice(-3000));
      t.regex(text, deviceOpenedPattern(machine, 26));
      const result = resultLine<ProbeResult>(text, 'virtiofs-probe-result: ');
      if (result === null) return t.fail(`no result line:\n${text.slice(-3000)}`);
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
      await cleanup.run();
    }
  });
}
