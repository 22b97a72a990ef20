// Guest program for the boot sequence's panic path: it opens a device (virtio-rng, so
// there is a live device to stop), then lets a promise reject with nobody handling it.
// boot() must print "PANIC: ..." with the error and exit with PANIC_STATUS (70).
import { boot } from '../../kernel/guest/boot.js';

boot('panic-probe', async (ctx) => {
  const t = ctx.openVirtioDevice(4);
  ctx.log(`device open, status 0x${t.status().toString(16)}; now rejecting a promise nobody awaits`);
  void Promise.reject(Object.assign(new Error('deliberate failure for the panic test'), { code: 'ERR_PANIC_PROBE' }));
  await new Promise((resolve) => setTimeout(resolve, 60_000));
  ctx.log('still alive after 60 s: the panic path did not run');
  return 0;
});
