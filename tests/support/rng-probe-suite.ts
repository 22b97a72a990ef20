// The rng-probe guest tests (appliance/guest/rng-probe.ts against QEMU's own virtio-rng),
// registered by tests/guest-rng.test.ts (QEMU's default: split rings) and
// tests/guest-rng-packed.test.ts (`packed=on`: the packed layout, virtio 1.2 2.8): one
// guest per machine per file. On microvm `virtio-rng-device` (virtio-mmio: Node binds
// the platform device to uio_pdrv_genirq and drives the virtio-mmio transport), on q35
// `virtio-rng-pci` modern only (1af4:1044: uio_pci_generic, the modern PCI transport).
// Either way the probe negotiates, sets its queue up in hugepage DMA memory, posts
// buffers, takes interrupts through uio (with and without a poll window) and reports
// the random bytes it got. On microvm it also shows that the kernel's own virtio-mmio
// driver keeps the root disk while the rng device is ours.
import test from 'ava';
import type { QemuExit } from '../../appliance/qemu/launch.js';
import { ADDON, Cleanup, GuestPerMachine, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest, resultLine } from './qemu-guest.js';

export interface RngProbeSuite {
  /** The test file's name, for the skip message. */
  file: string;
  /** QEMU's device with `packed=on`, and the probe told to insist on the packed layout. */
  packed: boolean;
}

export function rngProbeTests(suite: RngProbeSuite): void {
  const bundle = bundlePath('rng-probe.js');

  interface ProbeResult {
    features: string;
    accepted: string;
    ringLayout: string;
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
    pollWindow: { filled: number; burst: { events: number; spurious: number; phases: number; turns: number }; after: { events: number; spurious: number; phases: number }; handled: number };
    interrupts: number;
    costsNs: Record<string, number | null>;
    afterResetNoEventIdx: number;
    clocksource: string;
    platform: { devices: Array<{ name: string; driver: string | null; virtioDeviceId: number | null }>; rootDisk: string; rootMount: string | null } | null;
  }

  const guests = new GuestPerMachine(async (machine, cleanup: Cleanup) => {
    const qemu = await launchGuest(machine, { main: bundle, hugepages: 16, rng: suite.packed ? 'packed' : true, ...(suite.packed ? { args: ['--ring=packed'] } : {}), timeoutMs: 5 * 60 * 1000 }, cleanup);
    const exit: QemuExit = await qemu.exited;
    const text = qemu.console();
    return { exit, console: text, result: resultLine<ProbeResult>(text, 'rng-probe-result: ') };
  });
  test.after.always(() => guests.stopAll());

  const guestTest = guestTestsReady(suite.file, [bundle, ADDON]) ? test.serial : test.skip;
  const layout = suite.packed ? 'packed' : 'split';

  for (const machine of MACHINES) {
    const transport = machine === 'microvm' ? 'virtio-mmio' : 'modern PCI';

    guestTest(`${machine}: the guest program exits 0 after binding virtio-rng and reading from it`, async (t) => {
      const { exit, console: text, result } = await guests.get(machine);
      t.false(exit.timedOut, 'QEMU hit the safety timeout');
      t.is(exit.guestStatus, 0, text.slice(-3000));
      t.regex(text, deviceOpenedPattern(machine, 4));
      t.notRegex(text, /PANIC/);
      const started = /node started ([\d.]+) s after the kernel/.exec(text);
      const ready = /virtio device 4, interrupts: .* \((\d+) ms after node started\)/.exec(text);
      t.log(`QEMU start to guest exit ${exit.elapsedMs} ms; node started ${started?.[1]} s after the kernel; device ready ${ready?.[1]} ms after node started; clocksource ${result?.clocksource}`);
      // Without a TSC rate on the command line (tsc_early_khz) our kernel falls back to a 4 ms jiffies clock whenever its PIT calibration fails under host load.
      if (machine === 'microvm') t.is(result?.clocksource, 'tsc', 'the guest clock is the TSC');
    });

    guestTest(`${machine}: every posted buffer came back full of varied random bytes`, async (t) => {
      const { result, console: text } = await guests.get(machine);
      if (result === null) return t.fail(`no rng-probe-result line in the console:\n${text.slice(-3000)}`);
      t.deepEqual(result.lengths, new Array(8).fill(64));
      t.is(result.totalBytes, 512);
      t.true(result.distinct > 100, `only ${result.distinct} distinct byte values in 512 random bytes`);
      t.true(result.zeros < 32, `${result.zeros} zero bytes in 512 random bytes`);
      t.notRegex(result.firstBytes, /^(00)+$/);
    });

    guestTest(`${machine}: feature negotiation and queue setup on the ${transport} transport, ${layout} ring`, async (t) => {
      const { result } = await guests.get(machine);
      if (result === null) return t.fail('no result');
      const features = BigInt(result.features);
      t.true((features & (1n << 32n)) !== 0n, 'device offers VIRTIO_F_VERSION_1');
      t.is(result.eventIdx, (features & (1n << 29n)) !== 0n);
      t.true(result.queueSize >= 1 && (result.queueSize & (result.queueSize - 1)) === 0);
      // VIRTIO_F_RING_PACKED (34): offered with packed=on only, accepted when offered.
      t.is((features & (1n << 34n)) !== 0n, suite.packed, 'the device offers the packed layout exactly with packed=on');
      t.is((BigInt(result.accepted) & (1n << 34n)) !== 0n, suite.packed);
      t.is(result.ringLayout, layout);
    });

    guestTest(`${machine}: DMA memory is 2 MiB hugepages with 2 MiB-aligned physical addresses`, async (t) => {
      const { result } = await guests.get(machine);
      if (result === null) return t.fail('no result');
      t.true(result.dmaPhys.length >= 1);
      for (const a of result.dmaPhys) t.is(Number(BigInt(a) % (2n * 1024n * 1024n)), 0, a);
    });

    guestTest(`${machine}: interrupts arrive through uio for every round trip; busy polling works too`, async (t) => {
      const { result } = await guests.get(machine);
      if (result === null) return t.fail('no result');
      t.is(result.interruptRoundTripUs.n, 200);
      t.is(result.pollRoundTripUs.n, 200);
      // 8 buffers in one batch (at least one interrupt) + 200 single round trips.
      t.true(result.interrupts >= 201, `${result.interrupts} interrupts`);
      t.log(`round trips under this machine's QEMU (TCG): interrupt p50 ${result.interruptRoundTripUs.p50} us p99 ${result.interruptRoundTripUs.p99} us; busy poll p50 ${result.pollRoundTripUs.p50} us p99 ${result.pollRoundTripUs.p99} us`);
    });

    guestTest(`${machine}: after a reset the device is initialized again without EVENT_IDX and still interrupts`, async (t) => {
      const { result } = await guests.get(machine);
      if (result === null) return t.fail('no result');
      t.is(result.afterResetNoEventIdx, 50);
      t.log(`costs under TCG (ns per call): ${JSON.stringify(result.costsNs)}`);
    });

    guestTest(`${machine}: uio interrupts with a poll window: a burst is served by polling, and after a quiet window interrupts come back`, async (t) => {
      const { result } = await guests.get(machine);
      if (result === null) return t.fail('no result');
      const w = result.pollWindow;
      t.log(`poll window: ${JSON.stringify(w)}`);
      t.is(w.filled, 201, 'every round trip completed');
      t.true(w.burst.phases >= 1 && w.burst.turns > 0, JSON.stringify(w));
      // Interrupts only start polling phases: far fewer than the 200 round trips (each
      // phase ends after 20 quiet ms, which a busy TCG guest may hit now and then).
      t.true(w.burst.events < 100, `${w.burst.events} interrupts for 200 round trips`);
      // Events that found nothing pending are not counted: on microvm the edge the device
      // raised while the line was masked is replayed when the source unmasks (see
      // kernel/guest/interrupts.ts); it must begin no polling phase.
      t.is(w.after.events - w.after.spurious, w.burst.events - w.burst.spurious + 1, 'the round trip after the pause came by interrupt');
      t.is(w.after.phases, w.burst.phases + 1, 'and began a new polling phase, the only one since the burst');
    });

    if (machine === 'microvm') {
      guestTest('microvm: the kernel keeps the root disk on its virtio-mmio driver while the rng device is on uio_pdrv_genirq', async (t) => {
        const { result, console: text } = await guests.get(machine);
        if (result?.platform == null) return t.fail(`no platform devices in the result:\n${text.slice(-3000)}`);
        const { devices, rootDisk, rootMount } = result.platform;
        t.log(JSON.stringify(result.platform));
        // QEMU adds one virtio-mmio slot per device it creates: the disk and the rng device here.
        const disk = devices.filter((d) => d.driver === 'virtio-mmio');
        const ours = devices.filter((d) => d.driver === 'uio_pdrv_genirq');
        t.is(disk.length, 1, 'one device left to the kernel');
        t.is(disk[0]?.virtioDeviceId, 2, 'and it is the block device');
        t.is(ours.length, 1, 'one device on uio_pdrv_genirq');
        t.not(ours[0]?.name, disk[0]?.name);
        const opened = new RegExp(`${String.raw`(virtio-mmio\.\d+)`} virtio-mmio@0x[0-9a-f]+ -> /dev/uio\\d+, virtio device 4`).exec(text);
        t.is(opened?.[1], ours[0]?.name, 'the device boot() opened is the one on uio_pdrv_genirq');
        t.true(rootDisk.includes(`/${disk[0]?.name}/`), `/sys/block/vda is ${rootDisk}`);
        t.regex(rootMount ?? '', /^\S+ \/ squashfs ro[, ]/, 'the root file system is the squashfs, read-only');
      });
    }
  }
}
