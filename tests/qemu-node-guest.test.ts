// Boots the node guest image with a tiny program: once exiting with status 3, once
// throwing. Two boots, because each exit status needs its own guest run; the image is
// built once (the program's behaviour is chosen by an argument on the kernel command line).
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { launchQemu, type QemuExit, type QemuInstance } from '../appliance/qemu/launch.js';

const dir = mkdtempSync(join(tmpdir(), 'tsv-node-guest-'));
const main = join(dir, 'main.js');
writeFileSync(
  main,
  `const fs = require('node:fs');
console.log('node-version: ' + process.version);
console.log('pci-devices: ' + JSON.stringify(fs.readdirSync('/sys/bus/pci/devices')));
console.log('args: ' + JSON.stringify(process.argv.slice(2)));
console.log('hugepages: ' + fs.readFileSync('/proc/sys/vm/nr_hugepages', 'utf8').trim());
console.log('modules: ' + fs.readFileSync('/proc/modules', 'utf8').split('\\n').map((l) => l.split(' ')[0]).filter(Boolean).sort().join(','));
console.log('mounts: ' + fs.readFileSync('/proc/mounts', 'utf8').split('\\n').map((l) => l.split(' ')[2]).filter(Boolean).join(','));
if (process.argv[2] === 'throw') throw new Error('boom from the guest');
process.exit(3);
`,
);

const running = new Set<QemuInstance>();
test.after.always(async () => {
  for (const q of running) if (q.running) await q.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function boot(args: string[]): Promise<{ exit: QemuExit; console: string; buildMs: number; cached: boolean; size: number }> {
  const image = await buildNodeGuest({ main, args, name: 'node-guest-test' });
  const qemu = launchQemu({ kernel: image.kernel, initrd: image.initrd, append: image.append, timeoutMs: 10 * 60 * 1000 });
  running.add(qemu);
  try {
    const exit = await qemu.exited;
    return { exit, console: qemu.console(), buildMs: image.initramfs.buildMs, cached: image.initramfs.cached, size: image.initramfs.size };
  } finally {
    if (qemu.running) await qemu.stop();
    running.delete(qemu);
  }
}

test.serial('node runs as the guest program; its exit status comes back through the launcher', async (t) => {
  const r = await boot(['exit3', 'two words']);
  t.log(`image ${(r.size / 1e6).toFixed(1)} MB, ${r.cached ? 'cached' : 'built'} in ${r.buildMs} ms; QEMU start -> exit: ${r.exit.elapsedMs} ms`);
  t.is(r.exit.status, 3, r.console.slice(-3000));
  t.is(r.exit.guestStatus, 3);
  t.is(r.exit.qemuCode, 0, 'the guest powered off');
  t.false(r.exit.timedOut);
  t.false(r.exit.kernelPanic);
  const line = (p: string): string => r.console.split('\n').find((l) => l.startsWith(p)) ?? '';
  t.is(line('node-version: '), `node-version: ${process.version}`, 'the host node binary');
  const devices = JSON.parse(line('pci-devices: ').slice('pci-devices: '.length)) as string[];
  t.true(devices.length > 0 && devices.every((d) => /^0000:00:[0-9a-f]{2}\.\d$/.test(d)), String(devices));
  t.is(line('args: '), `args: ${JSON.stringify(['exit3', 'two words'])}`);
  t.is(line('hugepages: '), 'hugepages: 32');
  t.is(line('modules: '), 'modules: uio,uio_pci_generic', 'uio loaded; virtio_pci not');
  t.regex(line('mounts: '), /hugetlbfs/);
  t.regex(r.console, /tsvirtio-exit: 3/);
});

test.serial('a program that throws gives a non-zero status', async (t) => {
  const r = await boot(['throw']);
  t.log(`QEMU start -> exit: ${r.exit.elapsedMs} ms`);
  t.true(r.exit.status !== null && r.exit.status !== 0, r.console.slice(-3000));
  t.is(r.exit.status, 1, 'node exits 1 on an uncaught exception');
  t.regex(r.console, /boom from the guest/);
});
