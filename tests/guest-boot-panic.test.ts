// Boots the QEMU guest once with a program whose promise rejects unhandled after it
// opened a device: the boot sequence must print a clear PANIC line naming the error,
// reset the device, and exit non-zero (PANIC_STATUS), which the image's init reports.
import test from 'ava';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { type QemuInstance, launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';
import { PANIC_STATUS } from '../kernel/guest/boot.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bundle = `${root}dist/bundles/panic-probe.js`;
const addon = `${root}build/Release/tsvirtio.node`;
const ready = qemuAvailable() && existsSync(bundle) && existsSync(addon);

(ready ? test : test.skip)('an unhandled rejection in the guest program panics with a clear message and status 70', async (t) => {
  const image = await buildNodeGuest({ main: bundle, files: [{ guest: '/app/tsvirtio.node', host: addon }], hugepages: 8 });
  let qemu: QemuInstance | null = null;
  try {
    qemu = launchQemu({
      kernel: image.kernel,
      initrd: image.initrd,
      append: image.append,
      extraArgs: ['-device', 'virtio-rng-pci,disable-legacy=on'],
      timeoutMs: 5 * 60 * 1000, // safety net against a hung guest, not an assertion
    });
    const exit = await qemu.exited;
    const text = qemu.console();
    t.is(exit.guestStatus, PANIC_STATUS, text.slice(-3000));
    t.regex(text, /device open, status 0x3;/);
    t.regex(text, /PANIC: panic-probe: unhandled rejection: Error \[ERR_PANIC_PROBE\]: deliberate failure for the panic test/);
    t.notRegex(text, /still alive/);
  } finally {
    if (qemu?.running) await qemu.stop();
  }
});
