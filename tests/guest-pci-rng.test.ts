// Boots the QEMU guest once with QEMU's own virtio-rng device (modern only, 1af4:1044)
// and runs appliance/guest/rng-probe.ts in it: Node binds the device to uio_pci_generic,
// negotiates over the modern PCI transport, sets its queue up in hugepage DMA memory,
// posts buffers, takes interrupts through uio and reports the random bytes it got.
import test from 'ava';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { type QemuExit, type QemuInstance, launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bundle = `${root}dist/bundles/rng-probe.js`;
const addon = `${root}build/Release/tsvirtio.node`;

interface ProbeResult {
  features: string;
  eventIdx: boolean;
  queueSize: number;
  lengths: number[];
  totalBytes: number;
  distinct: number;
  zeros: number;
  firstBytes: string;
  dmaPhys: string[];
  interruptRoundTripUs: { p50: number; p99: number; n: number };
  pollRoundTripUs: { p50: number; p99: number; n: number };
  pollWindow: { filled: number; burst: { events: number; phases: number; turns: number }; after: { events: number; phases: number }; handled: number };
  interrupts: number;
  costsNs: Record<string, number>;
  afterResetNoEventIdx: number;
}

let run: Promise<{ exit: QemuExit; console: string; result: ProbeResult | null }> | null = null;

function bootOnce(): NonNullable<typeof run> {
  run ??= (async () => {
    const image = await buildNodeGuest({ main: bundle, files: [{ guest: '/app/tsvirtio.node', host: addon }], hugepages: 16 });
    let qemu: QemuInstance | null = null;
    try {
      qemu = launchQemu({
        kernel: image.kernel,
        initrd: image.initrd,
        append: image.append,
        extraArgs: ['-device', 'virtio-rng-pci,disable-legacy=on'],
        timeoutMs: 5 * 60 * 1000, // a safety net against a hung guest, not an assertion
      });
      const exit = await qemu.exited;
      const text = qemu.console();
      const line = text.split('\n').find((l) => l.startsWith('rng-probe-result: '));
      const result = line ? (JSON.parse(line.slice('rng-probe-result: '.length)) as ProbeResult) : null;
      return { exit, console: text, result };
    } finally {
      if (qemu?.running) await qemu.stop();
    }
  })();
  return run;
}

const ready = qemuAvailable() && existsSync(bundle) && existsSync(addon);
const guestTest = ready ? test.serial : test.skip;
if (!ready) console.warn('guest-pci-rng: skipped (needs qemu-system-x86_64, `node build.mjs` output and the native addon)');

guestTest('the guest program exits 0 after binding virtio-rng and reading from it', async (t) => {
  const { exit, console: text } = await bootOnce();
  t.false(exit.timedOut, 'QEMU hit the safety timeout');
  t.is(exit.guestStatus, 0, text.slice(-3000));
  t.regex(text, /1af4:1044 -> \/dev\/uio\d+, virtio device 4, interrupts: uio\d+ INTx/);
  t.notRegex(text, /PANIC/);
  const started = /node started ([\d.]+) s after the kernel/.exec(text);
  const ready = /virtio device 4, interrupts: .* \((\d+) ms after node started\)/.exec(text);
  t.log(`QEMU start to guest exit ${exit.elapsedMs} ms; node started ${started?.[1]} s after the kernel; device ready ${ready?.[1]} ms after node started`);
});

guestTest('every posted buffer came back full of varied random bytes', async (t) => {
  const { result, console: text } = await bootOnce();
  if (result === null) return t.fail(`no rng-probe-result line in the console:\n${text.slice(-3000)}`);
  t.deepEqual(result.lengths, new Array(8).fill(64));
  t.is(result.totalBytes, 512);
  t.true(result.distinct > 100, `only ${result.distinct} distinct byte values in 512 random bytes`);
  t.true(result.zeros < 32, `${result.zeros} zero bytes in 512 random bytes`);
  t.notRegex(result.firstBytes, /^(00)+$/);
});

guestTest('feature negotiation and queue setup on the modern PCI transport', async (t) => {
  const { result } = await bootOnce();
  if (result === null) return t.fail('no result');
  const features = BigInt(result.features);
  t.true((features & (1n << 32n)) !== 0n, 'device offers VIRTIO_F_VERSION_1');
  t.is(result.eventIdx, (features & (1n << 29n)) !== 0n);
  t.true(result.queueSize >= 1 && (result.queueSize & (result.queueSize - 1)) === 0);
});

guestTest('DMA memory is 2 MiB hugepages with 2 MiB-aligned physical addresses', async (t) => {
  const { result } = await bootOnce();
  if (result === null) return t.fail('no result');
  t.true(result.dmaPhys.length >= 1);
  for (const a of result.dmaPhys) t.is(Number(BigInt(a) % (2n * 1024n * 1024n)), 0, a);
});

guestTest('interrupts arrive through uio for every round trip; busy polling works too', async (t) => {
  const { result } = await bootOnce();
  if (result === null) return t.fail('no result');
  t.is(result.interruptRoundTripUs.n, 200);
  t.is(result.pollRoundTripUs.n, 200);
  // 8 buffers in one batch (at least one interrupt) + 200 single round trips.
  t.true(result.interrupts >= 201, `${result.interrupts} interrupts`);
  t.log(`round trips under this machine's QEMU (TCG): interrupt p50 ${result.interruptRoundTripUs.p50} us p99 ${result.interruptRoundTripUs.p99} us; busy poll p50 ${result.pollRoundTripUs.p50} us p99 ${result.pollRoundTripUs.p99} us`);
});

guestTest('after a reset the device is initialized again without EVENT_IDX and still interrupts', async (t) => {
  const { result } = await bootOnce();
  if (result === null) return t.fail('no result');
  t.is(result.afterResetNoEventIdx, 50);
  t.log(`costs under TCG (ns per call): ${JSON.stringify(result.costsNs)}`);
});

guestTest('INTx with a poll window: a burst is served by polling, and after a quiet window interrupts come back', async (t) => {
  const { result } = await bootOnce();
  if (result === null) return t.fail('no result');
  const w = result.pollWindow;
  t.is(w.filled, 201, 'every round trip completed');
  t.true(w.burst.phases >= 1 && w.burst.turns > 0, JSON.stringify(w));
  // Interrupts only start polling phases: far fewer than the 200 round trips (each
  // phase ends after 20 quiet ms, which a busy TCG guest may hit now and then).
  t.true(w.burst.events < 100, `${w.burst.events} interrupts for 200 round trips`);
  t.is(w.after.events, w.burst.events + 1, 'the round trip after the pause came by interrupt');
  t.is(w.after.phases, w.burst.phases + 1, 'and began a new polling phase');
});
