// Boots the QEMU guest once per machine with a program whose promise rejects unhandled
// after it opened a device (virtio-rng: virtio-mmio on microvm, PCI on q35): the boot
// sequence must print a clear PANIC line naming the error, reset the device, and exit
// non-zero (PANIC_STATUS), which the image's init reports.
import test from 'ava';
import { PANIC_STATUS } from '../kernel/guest/boot.js';
import { ADDON, Cleanup, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest } from './support/qemu-guest.js';

const bundle = bundlePath('panic-probe.js');
const guestTest = guestTestsReady('guest-boot-panic', [bundle, ADDON]) ? test.serial : test.skip;

for (const machine of MACHINES) {
  guestTest(`${machine}: an unhandled rejection in the guest program panics with a clear message and status 70`, async (t) => {
    const cleanup = new Cleanup();
    try {
      const qemu = await launchGuest(machine, { main: bundle, hugepages: 8, rng: true, timeoutMs: 5 * 60 * 1000 }, cleanup);
      const exit = await qemu.exited;
      const text = qemu.console();
      t.is(exit.guestStatus, PANIC_STATUS, text.slice(-3000));
      t.regex(text, deviceOpenedPattern(machine, 4));
      t.regex(text, /device open, status 0x3;/);
      t.regex(text, /PANIC: panic-probe: unhandled rejection: Error \[ERR_PANIC_PROBE\]: deliberate failure for the panic test/);
      t.notRegex(text, /still alive/);
    } finally {
      await cleanup.run();
    }
  });
}
