// Guest program: proves the guest transports (virtio modern PCI on q35, virtio-mmio on
// microvm), hugepage DMA memory and uio interrupts on a device QEMU emulates by itself,
// virtio-rng (entropy device, virtio device id 4, PCI 1af4:1044 or `virtio-rng-device`
// on virtio-mmio; virtio 1.2, 5.4: one requestq, the device fills device-writable
// buffers with random bytes).
//
// It prints `rng-probe-result: {json}` with the bytes it got and round-trip timings,
// and exits 0 when every buffer came back filled. `--ring=split|packed|auto` (default
// auto: packed when the device offers it, as QEMU's `packed=on` makes it) chooses the
// virtqueue layout (virtio 1.2, 2.7 / 2.8) for every phase. On microvm the result also lists the
// virtio-mmio platform devices with their drivers while the rng device is still ours:
// the root disk stays with the kernel's virtio-mmio driver (virtio-blk), the rng device
// is on uio_pdrv_genirq.
import { readFileSync, realpathSync } from 'node:fs';
import { boot, virtioBus } from '../../kernel/guest/boot.js';
import { listVirtioMmioDevices } from '../../kernel/platform/index.js';
import { BusyPoll, UioIntxInterrupts } from '../../kernel/guest/interrupts.js';
import { PCI_COMMAND } from '../../kernel/pci/config-space.js';
import { PciModernTransport } from '../../kernel/transport/pci-modern.js';
import { setupDriverQueue } from '../../kernel/transport/queue-setup.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, featureBit } from '../../kernel/virtqueue/layout.js';
import type { VirtqueueDriver } from '../../kernel/virtqueue/queue.js';
import { acceptRingFeatures, parseRingChoice } from '../../kernel/virtqueue/ring.js';

const VIRTIO_ID_ENTROPY = 4;
const BUFFERS = 8;
const BUFFER_BYTES = 64;
const ROUND_TRIPS = 200;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

boot('rng-probe', async (ctx) => {
  const t = ctx.openVirtioDevice(VIRTIO_ID_ENTROPY);
  const offered = t.deviceFeatures();
  const eventIdx = (offered & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n;
  const ring = parseRingChoice(ctx.args.find((a) => a.startsWith('--ring='))?.slice(7) ?? 'auto', '--ring');
  const accepted = featureBit(VIRTIO_F_VERSION_1) | acceptRingFeatures(offered, { ring }, 'virtio-rng');
  t.negotiate(accepted);
  const q: VirtqueueDriver<number> = setupDriverQueue<number>(t, 0, 'rng requestq', 64, accepted);
  t.driverOk();
  ctx.log(`device features 0x${offered.toString(16)}, accepted 0x${accepted.toString(16)}, ${q.layout} ring, queue size ${q.size}, status 0x${t.status().toString(16)}`);

  // One handler for the transport; each phase installs what it waits for.
  let onUsed: (slot: number, len: number) => void = () => {};
  const drain = (): void => {
    do q.drainUsed((slot, len) => onUsed(slot, len));
    while (q.enableInterrupts());
  };
  t.onInterrupt(drain);

  // Phase 1: BUFFERS device-writable buffers in one batch, one doorbell.
  const bufs = t.dma.allocate(BUFFERS * BUFFER_BYTES, 64);
  bufs.fill(0);
  const lengths = new Array<number>(BUFFERS).fill(-1);
  const t0 = process.hrtime.bigint();
  await new Promise<void>((resolve) => {
    let left = BUFFERS;
    onUsed = (slot, len) => {
      lengths[slot] = len;
      if (--left === 0) resolve();
    };
    for (let i = 0; i < BUFFERS; i++) q.add(i, [], [[t.dma.addressOf(bufs.subarray(i * BUFFER_BYTES)), BUFFER_BYTES]]);
    if (q.publish()) t.notify(0);
  });
  const batchUs = Number(process.hrtime.bigint() - t0) / 1000;
  const got = Buffer.from(bufs);
  const distinct = new Set(got).size;
  const zeros = got.filter((b) => b === 0).length;
  ctx.log(`got ${lengths.join(',')} bytes in ${BUFFERS} buffers (${batchUs.toFixed(0)} us); first 32: ${got.subarray(0, 32).toString('hex')}`);

  // Phase 2: doorbell -> interrupt round trips, one 16-byte buffer at a time.
  const one = t.dma.allocate(16, 64);
  const oneAddr = t.dma.addressOf(one);
  const roundTrip = (): Promise<number> =>
    new Promise<number>((resolve) => {
      const s = process.hrtime.bigint();
      onUsed = () => resolve(Number(process.hrtime.bigint() - s) / 1000);
      q.add(0, [], [[oneAddr, 16]]);
      if (q.publish()) t.notify(0);
    });
  const irqUs: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++) irqUs.push(await roundTrip());
  irqUs.sort((a, b) => a - b);

  // Phase 3: the same with busy polling (ring interrupts suppressed).
  q.disableInterrupts();
  t.onInterrupt(() => {});
  const poller = new BusyPoll();
  poller.start(() => false, () => {
    if (q.hasUsed()) q.drainUsed((slot, len) => onUsed(slot, len));
  });
  const pollUs: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++) pollUs.push(await roundTrip());
  poller.stop();
  pollUs.sort((a, b) => a - b);

  // Phase 4: what the pieces of the interrupt path cost, each timed over many calls.
  const timeNs = (n: number, fn: () => void): number => {
    const s = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    return Number(process.hrtime.bigint() - s) / n;
  };
  const pci = t instanceof PciModernTransport ? t : null;
  const cmd = pci?.fn.config.command() ?? 0;
  const costsNs = {
    doorbellWrite: timeNs(1000, () => t.notify(0)), // nothing new in the ring: the device finds no work
    isrRead: timeNs(1000, () => t.acknowledgeInterrupt()),
    // PCI only: the INTx unmask uio_pci_generic needs (virtio-mmio re-arms through uio's irqcontrol).
    configCommandWrite: pci ? timeNs(1000, () => pci.fn.config.write16(PCI_COMMAND, cmd)) : null,
    configCommandRead: pci ? timeNs(1000, () => pci.fn.config.command()) : null,
    usedRingCheck: timeNs(100000, () => q.hasUsed()),
  };
  ctx.log(`costs (ns per call): ${JSON.stringify(costsNs)}`);

  // Phase 5: reset and initialize again without EVENT_IDX (interrupt suppression by the
  // avail ring's NO_INTERRUPT flag instead, 2.7.7; packed: the event suppression
  // structure's DISABLE, 2.8.10), on fresh rings; interrupts again.
  t.reset();
  const acceptedNoEventIdx = featureBit(VIRTIO_F_VERSION_1) | acceptRingFeatures(offered, { ring, eventIdx: false }, 'virtio-rng');
  t.negotiate(acceptedNoEventIdx);
  const q2 = setupDriverQueue<number>(t, 0, 'rng requestq (no EVENT_IDX)', 64, acceptedNoEventIdx);
  t.driverOk();
  t.onInterrupt(() => {
    do q2.drainUsed((slot, len) => onUsed(slot, len));
    while (q2.enableInterrupts());
  });
  let afterReset = 0;
  for (let i = 0; i < 50; i++) {
    const len = await new Promise<number>((resolve) => {
      onUsed = (_slot, n) => resolve(n);
      q2.add(0, [], [[oneAddr, 16]]);
      if (q2.publish()) t.notify(0);
    });
    if (len === 16) afterReset++;
  }
  ctx.log(`after reset, without EVENT_IDX: ${afterReset} of 50 requests filled, status 0x${t.status().toString(16)}`);

  // Phase 6: interrupts with a poll window. The transport's own source stops (one watcher
  // per fd); a second one on the same uio device polls for 20 ms after each interrupt.
  // Round trips back to back are served by polling (few interrupts); after a pause longer
  // than the window the source sleeps and the next round trip comes by interrupt again.
  // On PCI, closing a uio fd clears bus mastering (uio_pci_generic's release hook), and
  // QEMU then drops DRIVER_OK: bus mastering on again and the device initialized afresh.
  const first = t.interrupts;
  if (!(first instanceof UioIntxInterrupts)) throw new Error(`rng-probe needs uio interrupts, got ${first?.description ?? 'none'}`);
  first.stop();
  pci?.fn.config.enableMemoryAndBusMastering();
  t.reset();
  t.negotiate(accepted);
  const q3 = setupDriverQueue<number>(t, 0, 'rng requestq (poll window)', 64, accepted);
  t.driverOk();
  const windowed = new UioIntxInterrupts(first.uio, pci ? pci.fn.config : null, { pollWindowMs: 20 });
  let handled = 0;
  windowed.start(
    () => t.acknowledgeInterrupt(),
    () => {
      handled++;
      do q3.drainUsed((slot, len) => onUsed(slot, len));
      while (q3.enableInterrupts());
    },
    () => t.usedProgress(),
  );
  const roundTrip3 = (): Promise<number> =>
    new Promise<number>((resolve) => {
      onUsed = (_slot, n) => resolve(n);
      q3.add(0, [], [[oneAddr, 16]]);
      if (q3.publish()) t.notify(0);
    });
  let windowedFilled = 0;
  for (let i = 0; i < ROUND_TRIPS; i++) if ((await roundTrip3()) === 16) windowedFilled++;
  const burst = { events: windowed.events, spurious: windowed.spurious, phases: windowed.pollPhases, turns: windowed.pollTurns };
  await new Promise((r) => setTimeout(r, 200)); // the window closes: back to interrupts
  const afterPause = (await roundTrip3()) === 16 ? 1 : 0;
  await new Promise((r) => setTimeout(r, 100));
  const pollWindow = { filled: windowedFilled + afterPause, burst, after: { events: windowed.events, spurious: windowed.spurious, phases: windowed.pollPhases }, handled };
  windowed.stop();
  ctx.log(`poll window 20 ms: ${JSON.stringify(pollWindow)}`);

  // Still open (bound to uio_pdrv_genirq): who drives which virtio-mmio device, and where the root is.
  const platform =
    virtioBus() === 'mmio'
      ? {
          devices: listVirtioMmioDevices().map((d) => ({ name: d.name, driver: d.driver, virtioDeviceId: d.virtioDeviceId })),
          rootDisk: realpathSync('/sys/block/vda'),
          rootMount: readFileSync('/proc/mounts', 'latin1').split('\n').filter((l) => l.split(' ')[1] === '/').pop() ?? null, // the last one mounted on /
        }
      : null;
  if (platform) ctx.log(`platform devices: ${JSON.stringify(platform)}`);

  const result = {
    features: '0x' + offered.toString(16),
    accepted: '0x' + accepted.toString(16),
    ringLayout: q.layout,
    eventIdx,
    queueSize: q.size,
    lengths,
    totalBytes: lengths.reduce((a, b) => a + Math.max(0, b), 0),
    distinct,
    zeros,
    firstBytes: got.subarray(0, 32).toString('hex'),
    dmaPhys: ctx.dma.physAddrs.map((a) => '0x' + a.toString(16)),
    interruptRoundTripUs: { p50: percentile(irqUs, 50), p99: percentile(irqUs, 99), n: irqUs.length },
    pollRoundTripUs: { p50: percentile(pollUs, 50), p99: percentile(pollUs, 99), n: pollUs.length },
    interrupts: t.interruptCount,
    costsNs,
    afterResetNoEventIdx: afterReset,
    pollWindow,
    platform,
    // "tsc"; "refined-jiffies" (4 ms steps, the timings above that coarse) when the kernel could not calibrate the TSC (microvm: see tsc_early_khz in appliance/image/node-guest.ts).
    clocksource: readFileSync('/sys/devices/system/clocksource/clocksource0/current_clocksource', 'latin1').trim(),
  };
  process.stdout.write(`rng-probe-result: ${JSON.stringify(result)}\n`);
  const ok = lengths.every((l) => l === BUFFER_BYTES) && distinct > 16 && afterReset === 50 && pollWindow.filled === ROUND_TRIPS + 1;
  return ok ? 0 : 1;
});
