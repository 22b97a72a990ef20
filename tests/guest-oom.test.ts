// A guest that runs out of memory is reported as such, with what the image needs, not as
// "the guest kernel panicked" or a bare exit status. One microvm boot of a program that
// takes memory until the kernel's OOM killer ends it (tests/support/memory-hog.ts): the
// console must show the kill (our kernel logs errors: loglevel=4), and the launcher's
// description of the exit must say out of memory and name the need. Without boot()
// locking node's code in RAM this guest thrashed for minutes instead (node's pages
// evicted and read back from the squashfs root over and over).
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { bootOptions } from '../appliance/image/guest.js';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';
import { describeExit } from '../appliance/run/appliance.js';
import { memoryNeed, outOfMemoryIn } from '../appliance/run/guest-memory.js';

const hog = fileURLToPath(new URL('../bundles/memory-hog.js', import.meta.url));
const addon = fileURLToPath(new URL('../../build/Release/tsvirtio.node', import.meta.url));
const MEMORY_MIB = 96;
const HUGEPAGES = 2;

test('a microvm guest killed by the OOM killer is reported as out of memory, with the need', async (t) => {
  if (!qemuAvailable()) return t.pass('QEMU is not installed: run npm run setup');
  const image = await buildNodeGuest({ machine: 'microvm', main: hog, name: 'memory-hog', hugepages: HUGEPAGES, files: [{ guest: '/app/tsvirtio.node', host: addon }] });
  const qemu = launchQemu({ ...bootOptions(image), memoryMiB: MEMORY_MIB, timeoutMs: 5 * 60_000 });
  try {
    const exit = await qemu.exited;
    const console = qemu.console();
    t.true(console.includes('memory-hog: taking memory'), console.slice(-2000));
    t.is(exit.guestStatus, 137, `node should die of SIGKILL (128 + 9); console:\n${console.slice(-2000)}`);
    t.regex(outOfMemoryIn(console) ?? '', /OOM killer killed a process \(node\)/);
    const need = memoryNeed(image, HUGEPAGES);
    const message = describeExit(exit, console.slice(-500), console, { memoryMiB: MEMORY_MIB, need });
    t.regex(message, new RegExp(`^the guest ran out of memory \\(.*\\) with ${MEMORY_MIB} MiB: this image needs about ${need.mib} MiB`));
  } finally {
    if (qemu.running) await qemu.stop();
  }
});

test('outOfMemoryIn: what each kind of out-of-memory death prints, and nothing for a clean console', (t) => {
  t.is(outOfMemoryIn('booted\nlistening\n'), null);
  t.regex(outOfMemoryIn('Kernel panic - not syncing: System is deadlocked on memory\n') ?? '', /deadlocked on memory/);
  t.regex(outOfMemoryIn('[    3.1] Out of memory: Killed process 57 (node) total-vm:...\n') ?? '', /\(node\)/);
  t.regex(outOfMemoryIn('Initramfs unpacking failed: write error\n') ?? '', /initramfs did not fit/);
  t.regex(outOfMemoryIn('Kernel panic - not syncing: Out of memory and no killable processes...\n') ?? '', /no killable processes/);
});
