// Boots the node guest image with a tiny program on each machine: once exiting with
// status 3, once throwing. Two boots per machine, because each exit status needs its own
// guest run; the image is built once per machine (the program's behaviour is chosen by
// an argument on the kernel command line). The program prints what it sees of the
// guest: the buses (q35: PCI devices; microvm: no PCI, virtio-mmio platform devices),
// hugepages, modules, mounts.
import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildNodeGuest, DEFAULT_HUGEPAGES } from '../appliance/image/node-guest.js';
import { bootOptions, type Machine } from '../appliance/image/guest.js';
import { launchQemu, qemuAvailable, type QemuExit } from '../appliance/qemu/launch.js';
import { Cleanup, MACHINES } from './support/qemu-guest.js';

const files = new Cleanup();
const dir = files.tempDir('tsv-node-guest-');
test.after.always(() => files.run());
const main = join(dir, 'main.js');
// More console output than the guest's serial port sends before the program is done: the
// tail is still in the tty's buffer when node exits, and must not be lost to the reboot.
const FLOOD_LINES = 1000;
/** The host stops reading for HOST_STALL_MS once it sees the line this far from the end. */
const STALL_LINES_BEFORE_END = 40;
const HOST_STALL_MS = 3000;
writeFileSync(
  main,
  `const FLOOD_LINES = ${FLOOD_LINES};
const fs = require('node:fs');
const list = (d) => { try { return fs.readdirSync(d); } catch { return null; } };
const read = (f) => { try { return fs.readFileSync(f, 'utf8'); } catch { return null; } };
console.log('node-version: ' + process.version);
console.log('pci-devices: ' + JSON.stringify(list('/sys/bus/pci/devices')));
console.log('platform-devices: ' + JSON.stringify(list('/sys/bus/platform/devices')));
console.log('args: ' + JSON.stringify(process.argv.slice(2)));
console.log('hugepages: ' + read('/proc/sys/vm/nr_hugepages').trim());
const modules = read('/proc/modules');
console.log('modules: ' + (modules === null ? '(no /proc/modules)' : modules.split('\\n').map((l) => l.split(' ')[0]).filter(Boolean).sort().join(',')));
console.log('mounts: ' + read('/proc/mounts').split('\\n').filter(Boolean).map((l) => l.split(' ')[1] + '=' + l.split(' ')[2]).join(','));
console.log('cwd: ' + process.cwd());
console.log('env: ' + JSON.stringify({ PATH: process.env.PATH, HOME: process.env.HOME, TERM: process.env.TERM, args: Object.keys(process.env).filter((k) => k.startsWith('TSVIRTIO_ARG_')) }));
if (process.argv[2] === 'throw') throw new Error('boom from the guest');
if (process.argv[2] === 'kill') process.kill(process.pid, 'SIGKILL');
if (process.argv[2] === 'flood') {
  for (let i = 0; i < FLOOD_LINES; i++) process.stdout.write('flood ' + i + ' ' + '.'.repeat(60) + '\\n');
  process.exit(0);
}
process.exit(3);
`,
);

async function boot(
  machine: Machine,
  args: string[],
  onLine?: (line: string) => void,
): Promise<{ exit: QemuExit; console: string; buildMs: number; cached: boolean; size: number }> {
  const cleanup = new Cleanup();
  try {
    const image = await buildNodeGuest({ machine, main, args, name: 'node-guest-test' });
    const qemu = cleanup.qemu(launchQemu({ ...bootOptions(image), timeoutMs: 10 * 60 * 1000 }));
    if (onLine) qemu.onLine(onLine);
    const exit = await qemu.exited;
    const built = image.machine === 'q35' ? image.initramfs : image.squashfs;
    return { exit, console: qemu.console(), buildMs: built.buildMs, cached: built.cached, size: image.imageBytes };
  } finally {
    await cleanup.run();
  }
}

const guestTest = qemuAvailable() ? test.serial : test.skip;
if (!qemuAvailable()) console.warn('qemu-node-guest: skipped (needs qemu-system-x86_64)');

for (const machine of MACHINES) {
  guestTest(`${machine}: node runs as the guest program; its exit status comes back through the launcher`, async (t) => {
    const r = await boot(machine, ['exit3', 'two words']);
    t.log(`image ${(r.size / 1e6).toFixed(1)} MB, ${r.cached ? 'cached' : 'built'} in ${r.buildMs} ms; QEMU start -> exit: ${r.exit.elapsedMs} ms`);
    t.is(r.exit.status, 3, r.console.slice(-3000));
    t.is(r.exit.guestStatus, 3);
    t.is(r.exit.qemuCode, 0, 'the guest powered off');
    t.false(r.exit.timedOut);
    t.false(r.exit.kernelPanic);
    const line = (p: string): string => r.console.split('\n').find((l) => l.startsWith(p)) ?? '';
    const json = <T>(p: string): T => JSON.parse(line(p).slice(p.length) || 'null') as T;
    t.is(line('node-version: '), `node-version: ${process.version}`, 'the host node binary');
    t.is(line('args: '), `args: ${JSON.stringify(['exit3', 'two words'])}`);
    t.is(line('hugepages: '), `hugepages: ${DEFAULT_HUGEPAGES[machine]}`);
    const mounts = new Map(line('mounts: ').slice('mounts: '.length).split(',').map((m) => m.split('=') as [string, string]));
    t.is(mounts.get('/dev/hugepages'), 'hugetlbfs');
    const pci = json<string[] | null>('pci-devices: ');
    const platform = json<string[] | null>('platform-devices: ') ?? [];
    if (machine === 'q35') {
      t.true(pci !== null && pci.length > 0 && pci.every((d) => /^0000:00:[0-9a-f]{2}\.\d$/.test(d)), String(pci));
      t.is(line('modules: '), 'modules: uio,uio_pci_generic', 'uio loaded; virtio_pci not');
      t.is(mounts.get('/'), 'rootfs', 'the initramfs is the root');
    } else {
      // The kernel has PCI (for restorable guests: appliance/run/vm-snapshot.ts), but booted
      // with acpi=off microvm has no host bridge to find.
      t.deepEqual(pci, [], 'no PCI device on a microvm booted cold');
      t.true(platform.some((d) => /^virtio-mmio\.\d+$/.test(d)), `virtio-mmio platform devices: ${JSON.stringify(platform)}`);
      t.is(line('modules: '), 'modules: (no /proc/modules)', 'our kernel has everything built in');
      t.is(mounts.get('/'), 'squashfs', 'the root is the squashfs disk');
      // What the init (appliance/image/init/tsvirtio-init.c) sets up.
      for (const [dir, type] of [['/proc', 'proc'], ['/sys', 'sysfs'], ['/tmp', 'tmpfs'], ['/dev/shm', 'tmpfs'], ['/dev', 'devtmpfs']]) t.is(mounts.get(dir), type, dir);
      t.is(line('cwd: '), 'cwd: /app');
      t.deepEqual(json('env: '), { PATH: '/usr/bin:/usr/sbin:/bin:/sbin', HOME: '/root', TERM: 'dumb', args: [] });
      t.regex(r.console, /tsvirtio-stage: init \d+\.\d{3}\ntsvirtio-stage: exec \d+\.\d{3}\n/);
    }
    t.regex(r.console, /tsvirtio-exit: 3/);
  });

  guestTest(`${machine}: a program that throws gives a non-zero status`, async (t) => {
    const r = await boot(machine, ['throw']);
    t.log(`QEMU start -> exit: ${r.exit.elapsedMs} ms`);
    t.true(r.exit.status !== null && r.exit.status !== 0, r.console.slice(-3000));
    t.is(r.exit.status, 1, 'node exits 1 on an uncaught exception');
    t.regex(r.console, /boom from the guest/);
  });

  guestTest(`${machine}: everything the program printed reaches the host before the guest ends, even when the host reads late`, async (t) => {
    // The host stops reading for a while near the end of the output. QEMU writes the
    // serial port's bytes to its stdout one at a time, so it soon cannot write more, and
    // the rest waits in the guest's tty buffer when the program exits: the guest must not
    // end (reboot) until that buffer has gone out.
    let stalled = false;
    const r = await boot(machine, ['flood'], (line) => {
      if (stalled || !line.startsWith(`flood ${FLOOD_LINES - STALL_LINES_BEFORE_END} `)) return;
      stalled = true;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, HOST_STALL_MS);
    });
    t.true(stalled, 'the host stalled its reading');
    t.is(r.exit.status, 0, r.console.slice(-3000));
    const flood = r.console.split('\n').filter((l) => l.startsWith('flood '));
    const missing = FLOOD_LINES - flood.length;
    t.is(missing, 0, `the last line that arrived: ${JSON.stringify(flood.at(-1))}`);
    t.deepEqual(
      flood.map((l) => l.trimEnd()),
      Array.from({ length: FLOOD_LINES }, (_, i) => `flood ${i} ${'.'.repeat(60)}`),
      'every line whole, in order',
    );
    t.regex(r.console, new RegExp(`flood ${FLOOD_LINES - 1} \\.+\\r?\\n(.*\\n)*tsvirtio-exit: 0`), 'the exit line after the last line');
  });

  guestTest(`${machine}: a program killed by a signal gives 128 + the signal, as a shell would`, async (t) => {
    const r = await boot(machine, ['kill']);
    t.is(r.exit.guestStatus, 137, r.console.slice(-3000));
    t.regex(r.console, /tsvirtio-exit: 137/);
  });
}
