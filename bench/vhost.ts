// Level 2, the device side alone: our vhost-user-vsock daemon (in this process) serving
// a stock-Linux guest (the kernel's own virtio-vsock driver, socat services), measured
// through the daemon's hybrid Unix socket: throughput host -> guest and guest -> host
// at 64 KiB writes, and ping-pong p50/p99 at 8192 and 16384 bytes (socat echo).
//
// Then the cost of watching it: the same throughput with packet capture (every packet,
// whole payload, to a file) and metrics (scraped every second) on, and off, in rounds
// interleaved on the same guest (off/on, then on/off, ...): medians, spread (min..max),
// and the ratio on/off of the medians and of each round's pair. The capture's own cost
// per packet (ns, and bytes allocated: young-generation collections counted in a child
// process with a fixed young generation) is measured apart.
//
// Last, guest to guest (sibling routing, both VMs in one --vm group): a second stock-Linux
// guest boots, and each guest sends to the other and to the host in interleaved rounds
// (socat -u at 64 KiB writes, timed in the sender by busybox `time`, 10 ms resolution).
//   npm run bench -- vhost [--mib N] [--iterations N] [--rounds N] [--round-mib N] [--sibling-mib N] [--no-siblings]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseClientArgs } from '../appliance/pingpong/client-args.js';
import { runClient } from '../appliance/pingpong/client.js';
import { connectHybridVsock } from '../appliance/pingpong/hybrid-connect.js';
import { type LinuxGuest, startLinuxGuest } from '../appliance/qemu/start.js';
import { type RunningDaemon, startDaemon } from '../drivers/virtio-vsock/daemon/daemon.js';
import { PcapCapture } from '../drivers/virtio-vsock/daemon/pcap-capture.js';
import { TAP_HOST_TO_GUEST } from '../drivers/virtio-vsock/device/packet-tap.js';
import { VSOCK_HEADER_SIZE } from '../drivers/virtio-vsock/header.js';
import type { MemoryRegion } from '../kernel/memory/guest-memory.js';
import { DescriptorChain } from '../kernel/virtqueue/device-queue.js';
import { guestToHost, hostToGuest } from './guest.js';
import { percentile, printTable, spreadOf, type Spread, writeResults } from './report.js';
import { BenchUsageError } from './usage.js';

const CID = 3;
const ECHO_PORT = 5000;
const SINK_PORT = 6000;
const SOURCE_PORT = 6001;
const ROUND_SOURCE_PORT = 6002;
const SCRAPE_INTERVAL_MS = 1000;
const SIBLING_CID = 4;
const SIBLING_GROUP = 'bench';
const SIBLING_SINK_PORT = 7000;
const HOST_SINK_PORT = 7100;

/** MB/s of `bytes` sent by `guest` to cid:port at 64 KiB writes, timed in the guest (busybox time). */
async function guestSend(guest: LinuxGuest, cid: number, port: number, bytes: number): Promise<number> {
  const r = await guest.shell.run(`time sh -c 'head -c ${bytes} /dev/zero | socat -u -b 65536 - VSOCK-CONNECT:${cid}:${port}'`, { timeoutMs: 30 * 60 * 1000 });
  const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(r.output);
  if (r.status !== 0 || !m) throw new Error(`bench vhost: send to ${cid}:${port} failed: ${r.output}`);
  return bytes / (Number(m[1]) * 60 + Number(m[2])) / 1e6;
}

/** Notifications per MB of one transfer kind, summed over the rounds: the sender's and the receiver's device. */
interface NotificationCounts {
  /** Sender: tx kicks, tx interrupts, rx interrupts and rx packets (credit updates); receiver: rx interrupts and rx kicks (a sibling only). */
  senderTxKicks: number;
  senderTxIrqs: number;
  senderRxIrqs: number;
  senderRxPackets: number;
  receiverRxIrqs: number;
  receiverRxKicks: number;
  mb: number;
}

type Counted = { stats: { kicks: { rx: number; tx: number }; interrupts: { rx: number; tx: number }; rxPackets: number } };

/** Runs `send` and adds what the devices counted meanwhile (per MB, once divided by mb). */
async function counted(into: NotificationCounts, sender: Counted, receiver: Counted | null, bytes: number, send: () => Promise<number>): Promise<number> {
  const s0 = { ...sender.stats.kicks, irqTx: sender.stats.interrupts.tx, irqRx: sender.stats.interrupts.rx, rxPackets: sender.stats.rxPackets };
  const r0 = receiver ? { irqRx: receiver.stats.interrupts.rx, kickRx: receiver.stats.kicks.rx } : null;
  const mbps = await send();
  into.senderTxKicks += sender.stats.kicks.tx - s0.tx;
  into.senderTxIrqs += sender.stats.interrupts.tx - s0.irqTx;
  into.senderRxIrqs += sender.stats.interrupts.rx - s0.irqRx;
  into.senderRxPackets += sender.stats.rxPackets - s0.rxPackets;
  if (receiver && r0) {
    into.receiverRxIrqs += receiver.stats.interrupts.rx - r0.irqRx;
    into.receiverRxKicks += receiver.stats.kicks.rx - r0.kickRx;
  }
  into.mb += bytes / 1e6;
  return mbps;
}

function perMb(c: NotificationCounts): Record<string, number> {
  const f = (n: number): number => Math.round((n / c.mb) * 10) / 10;
  return {
    'sender tx kicks/MB': f(c.senderTxKicks),
    'sender tx irqs/MB': f(c.senderTxIrqs),
    'sender rx irqs/MB': f(c.senderRxIrqs),
    'sender rx packets/MB': f(c.senderRxPackets),
    'receiver rx irqs/MB': f(c.receiverRxIrqs), 'receiver rx kicks/MB': f(c.receiverRxKicks) };
}

interface SiblingRound {
  round: number;
  /** MB/s, per sender: to the host, and to the other guest. */
  aToHost: number;
  aToB: number;
  bToHost: number;
  bToA: number;
}

/**
 * Guest to guest beside guest to host: guest B boots on the daemon's second VM (one
 * group with A); rounds alternate the order of the four transfers.
 */
async function siblingRounds(
  a: LinuxGuest,
  socketB: string,
  udsA: string,
  udsB: string,
  bytes: number,
  rounds: number,
  devs: { a: Counted; b: Counted },
): Promise<{ rounds: SiblingRound[]; bootMs: number; notifications: { toHost: NotificationCounts; toSibling: NotificationCounts } }> {
  const zero = (): NotificationCounts => ({ senderTxKicks: 0, senderTxIrqs: 0, senderRxIrqs: 0, senderRxPackets: 0, receiverRxIrqs: 0, receiverRxKicks: 0, mb: 0 });
  const notifications = { toHost: zero(), toSibling: zero() };
  const sinks = [udsA, udsB].map((u) => {
    const srv = createServer((s) => {
      s.on('data', () => {});
      s.on('error', () => {});
    });
    srv.listen(`${u}_${HOST_SINK_PORT}`);
    return srv;
  });
  let b: LinuxGuest | null = null;
  try {
    console.log('\nbooting the second stock-Linux guest (sibling of the first)…');
    b = await startLinuxGuest({ launch: { vhostUserVsock: { socket: socketB } } });
    for (const g of [a, b]) await g.shell.runBackground(`socat -u -b 65536 VSOCK-LISTEN:${SIBLING_SINK_PORT},fork,reuseaddr OPEN:/dev/null`);
    await guestSend(a, SIBLING_CID, SIBLING_SINK_PORT, 1 << 20).catch(async () => {
      await new Promise((r) => setTimeout(r, 1000)); // the sink may not listen yet: one retry
      return guestSend(a, SIBLING_CID, SIBLING_SINK_PORT, 1 << 20);
    });
    const out: SiblingRound[] = [];
    for (let r = 0; r < rounds; r++) {
      const row: SiblingRound = { round: r + 1, aToHost: 0, aToB: 0, bToHost: 0, bToA: 0 };
      const steps: Array<() => Promise<void>> = [
        async () => void (row.aToHost = await counted(notifications.toHost, devs.a, null, bytes, () => guestSend(a, 2, HOST_SINK_PORT, bytes))),
        async () => void (row.aToB = await counted(notifications.toSibling, devs.a, devs.b, bytes, () => guestSend(a, SIBLING_CID, SIBLING_SINK_PORT, bytes))),
        async () => void (row.bToHost = await counted(notifications.toHost, devs.b, null, bytes, () => guestSend(b!, 2, HOST_SINK_PORT, bytes))),
        async () => void (row.bToA = await counted(notifications.toSibling, devs.b, devs.a, bytes, () => guestSend(b!, CID, SIBLING_SINK_PORT, bytes))),
      ];
      if (r % 2 === 1) steps.reverse();
      for (const step of steps) await step();
      out.push(row);
      console.log(`  round ${r + 1}: A -> host ${row.aToHost.toFixed(1)}, A -> B ${row.aToB.toFixed(1)}, B -> host ${row.bToHost.toFixed(1)}, B -> A ${row.bToA.toFixed(1)} MB/s`);
    }
    return { rounds: out, bootMs: b.bootMs, notifications };
  } finally {
    if (b?.qemu.running) await b.qemu.stop();
    for (const s of sinks) s.close();
  }
}

function scrape(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve(n));
    }).on('error', reject);
  });
}

interface OnOffRound {
  round: number;
  order: string;
  offH2g: number;
  onH2g: number;
  offG2h: number;
  onG2h: number;
}

/**
 * Capture and metrics off, then on (or on, then off: the order flips every round), each
 * moving `bytes` both ways. "on": the daemon's capture tap on the device, /metrics scraped
 * every second; "off": no tap, no scrape.
 */
async function onOffRounds(daemon: RunningDaemon, uds: string, bytes: number, rounds: number): Promise<{ rounds: OnOffRound[]; scrapes: number; captured: number }> {
  const vm = daemon.vms.get(CID)!;
  const capture = vm.capture;
  if (!capture || !daemon.metrics) throw new Error('bench vhost: the daemon has no capture or metrics');
  const url = daemon.metrics.url;
  let scrapes = 0;
  let timer: NodeJS.Timeout | null = null;
  const set = (on: boolean): void => {
    vm.device.tap = on ? capture : null;
    if (timer) clearInterval(timer);
    timer = on
      ? setInterval(() => {
          void scrape(url).then(() => scrapes++);
        }, SCRAPE_INTERVAL_MS)
      : null;
  };
  const out: OnOffRound[] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? [false, true] : [true, false];
      const row: OnOffRound = { round: r + 1, order: order.map((o) => (o ? 'on' : 'off')).join('/'), offH2g: 0, onH2g: 0, offG2h: 0, onG2h: 0 };
      for (const on of order) {
        set(on);
        const h2g = await hostToGuest(uds, bytes, SINK_PORT);
        const g2h = await guestToHost(uds, bytes, ROUND_SOURCE_PORT);
        if (on) {
          row.onH2g = h2g;
          row.onG2h = g2h;
        } else {
          row.offH2g = h2g;
          row.offG2h = g2h;
        }
      }
      out.push(row);
      console.log(`  round ${r + 1} (${row.order}): host -> guest off ${row.offH2g.toFixed(1)} on ${row.onH2g.toFixed(1)} MB/s; guest -> host off ${row.offG2h.toFixed(1)} on ${row.onG2h.toFixed(1)} MB/s`);
    }
  } finally {
    set(false);
    vm.device.tap = capture;
  }
  return { rounds: out, scrapes, captured: capture.records };
}

/** One packet's chain for the capture micro-benchmark: header + payload in one writable segment. */
function fakeChain(payloadBytes: number): DescriptorChain {
  const bytes = Buffer.alloc(VSOCK_HEADER_SIZE + payloadBytes, 0x5a);
  const region: MemoryRegion = { guestAddr: 0, size: bytes.length, bytes, view: new DataView(bytes.buffer), name: 'bench' };
  const chain = new DescriptorChain(1);
  chain.regions = [region];
  chain.offsets[0] = 0;
  chain.lengths[0] = bytes.length;
  chain.writableCount = 1;
  chain.writableLength = bytes.length;
  return chain;
}

interface CaptureCost {
  payloadBytes: number;
  packets: number;
  nsPerPacket: number;
  /** Young-generation collections during the packets, with a fixed 16 MiB young generation. */
  scavenges: number;
  /** scavenges x 16 MiB / packets: what was allocated per packet (to within one collection). */
  bytesPerPacket: number;
}

const YOUNG_GEN_MIB = 16;

/** In the child: `packets` calls of PcapCapture.packet() to /dev/null; prints ns per packet. */
function captureLoop(payloadBytes: number, packets: number): void {
  const chain = fakeChain(payloadBytes);
  const header = Buffer.alloc(VSOCK_HEADER_SIZE);
  header.writeUInt32LE(2, 0);
  header.writeUInt32LE(CID, 8);
  header.writeUInt32LE(payloadBytes, 24);
  header.writeUInt16LE(payloadBytes > 0 ? 5 : 3, 30);
  const capture = new PcapCapture('/dev/null');
  const t0 = performance.now();
  for (let i = 0; i < packets; i++) capture.packet(TAP_HOST_TO_GUEST, header, chain, payloadBytes);
  const ns = ((performance.now() - t0) * 1e6) / packets;
  capture.close();
  console.log(`capture-cost ${JSON.stringify({ nsPerPacket: ns })}`);
}

/**
 * PcapCapture.packet() alone, to /dev/null (CPU and allocation, not the disk), in a child
 * process with a fixed young generation whose collections are counted (--trace-gc).
 */
function captureCost(payloadBytes: number, packets: number): CaptureCost {
  const run = fileURLToPath(new URL('./run.js', import.meta.url));
  const r = spawnSync(process.execPath, [`--min-semi-space-size=${YOUNG_GEN_MIB}`, `--max-semi-space-size=${YOUNG_GEN_MIB}`, '--trace-gc', run, 'vhost', '--capture-cost-child', String(payloadBytes), String(packets)], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  const line = /^capture-cost (.*)$/m.exec(r.stdout);
  if (r.status !== 0 || !line) throw new Error(`bench vhost: the capture-cost child failed (${r.status}): ${r.stderr}`);
  const scavenges = (r.stdout.match(/Scavenge/g) ?? []).length;
  return { payloadBytes, packets, nsPerPacket: (JSON.parse(line[1]!) as { nsPerPacket: number }).nsPerPacket, scavenges, bytesPerPacket: (scavenges * YOUNG_GEN_MIB * 1024 * 1024) / packets };
}

async function waitListening(uds: string, port: number): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      const s = await connectHybridVsock(uds, port, 5000);
      s.destroy();
      return;
    } catch (e) {
      if (i > 100) throw new Error(`guest port ${port} does not answer: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

export const usage = 'npm run bench -- vhost [--mib N] [--iterations N] [--rounds N] [--round-mib N] [--sibling-mib N] [--no-siblings]';

export default async function vhost(argv: string[]): Promise<void> {
  if (argv[0] === '--capture-cost-child') {
    captureLoop(Number(argv[1]), Number(argv[2]));
    return;
  }
  let mib = 16;
  let iterations = 300;
  let rounds = 6;
  let roundMib = 8;
  let siblingMib = 64;
  let siblings = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => argv[++i] ?? '';
    if (a === '--mib') mib = Number(v());
    else if (a === '--iterations') iterations = Number(v());
    else if (a === '--rounds') rounds = Number(v());
    else if (a === '--round-mib') roundMib = Number(v());
    else if (a === '--sibling-mib') siblingMib = Number(v());
    else if (a === '--no-siblings') siblings = false;
    else throw new BenchUsageError(`unknown flag ${a} (flags: --mib N, --iterations N, --rounds N, --round-mib N, --sibling-mib N, --no-siblings)`);
  }
  if (!(mib > 0) || !(iterations > 0) || !(rounds > 0) || !(roundMib > 0) || !(siblingMib > 0)) {
    console.error('bench vhost: --mib, --iterations, --rounds, --round-mib and --sibling-mib take positive numbers');
    process.exit(2);
  }
  const bytes = Math.round((mib * 1024 * 1024) / 65536) * 65536;
  const roundBytes = Math.round((roundMib * 1024 * 1024) / 65536) * 65536;
  const dir = mkdtempSync(join(tmpdir(), 'tsv-vhost-'));
  const socket = join(dir, 'vsock.sock');
  const uds = join(dir, 'vsock.uds');
  const pcap = join(dir, 'capture.pcap');
  const socketB = join(dir, 'vsock-b.sock');
  const udsB = join(dir, 'vsock-b.uds');
  const daemon = await startDaemon(
    {
      vms: [
        { guestCid: CID, socketPath: socket, udsPath: uds, groups: [SIBLING_GROUP] },
        { guestCid: SIBLING_CID, socketPath: socketB, udsPath: udsB, groups: [SIBLING_GROUP] },
      ],
      forwards: [],
      pcapPath: pcap,
      metrics: { host: '127.0.0.1', port: 0, allowRemote: false },
    },
    { log: () => {} },
  );
  daemon.vms.get(SIBLING_CID)!.device.tap = null;
  // The first measurements run as before, without capture.
  const capture = daemon.vms.get(CID)!.capture!;
  daemon.vms.get(CID)!.device.tap = null;
  let guest: LinuxGuest | null = null;
  try {
    console.log('booting the stock-Linux guest…');
    guest = await startLinuxGuest({ launch: { vhostUserVsock: { socket } } });
    console.log(`  shell ready after ${(guest.bootMs / 1000).toFixed(1)} s`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${ECHO_PORT},fork,reuseaddr EXEC:cat`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${SINK_PORT},fork,reuseaddr SYSTEM:'wc -c'`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${SOURCE_PORT},fork,reuseaddr SYSTEM:'head -c ${bytes} /dev/zero'`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${ROUND_SOURCE_PORT},fork,reuseaddr SYSTEM:'head -c ${roundBytes} /dev/zero'`);
    for (const p of [ECHO_PORT, SINK_PORT]) await waitListening(uds, p);
    await hostToGuest(uds, 1024 * 1024, SINK_PORT); // warm-up
    const h2g = await hostToGuest(uds, bytes, SINK_PORT);
    const g2h = await guestToHost(uds, bytes, SOURCE_PORT);
    const text = await runClient(parseClientArgs(['--uds', `${uds}:${ECHO_PORT}`, '--sizes', '8192,16384', '--iterations', String(iterations), '--warmup', '10', '--json']));
    const pp = (JSON.parse(text) as { results: Array<{ sizeBytes: number; p50Us: number; p99Us: number; meanUs: number }> }).results;
    printTable(`our vhost-user-vsock daemon, stock-Linux guest (socat), hybrid socket, ${mib} MiB at 64 KiB writes (QEMU TCG, loaded 2-core machine)`, [
      { direction: 'host -> guest', 'MB/s': Math.round(h2g * 10) / 10 },
      { direction: 'guest -> host', 'MB/s': Math.round(g2h * 10) / 10 },
    ]);
    printTable(`ping-pong (socat EXEC:cat echo), ${iterations} round trips`, pp.map((r) => ({ bytes: r.sizeBytes, 'p50 us': Math.round(r.p50Us), 'p99 us': Math.round(r.p99Us), 'mean us': Math.round(r.meanUs) })));

    console.log(`\ncapture + metrics off vs on: ${rounds} rounds of ${roundMib} MiB each way, order flipped every round`);
    daemon.vms.get(CID)!.device.tap = capture;
    const onOff = await onOffRounds(daemon, uds, roundBytes, rounds);
    const col = (k: keyof OnOffRound): number[] => onOff.rounds.map((r) => r[k] as number);
    const stats = {
      hostToGuest: { off: spreadOf(col('offH2g')), on: spreadOf(col('onH2g')), pairedRatio: spreadOf(onOff.rounds.map((r) => r.onH2g / r.offH2g)) },
      guestToHost: { off: spreadOf(col('offG2h')), on: spreadOf(col('onG2h')), pairedRatio: spreadOf(onOff.rounds.map((r) => r.onG2h / r.offG2h)) },
    };
    const row = (dir: string, s: typeof stats.hostToGuest): Record<string, string | number> => ({
      direction: dir,
      'off MB/s (median)': s.off.median,
      'off min..max': `${s.off.min.toFixed(1)}..${s.off.max.toFixed(1)}`,
      'on MB/s (median)': s.on.median,
      'on min..max': `${s.on.min.toFixed(1)}..${s.on.max.toFixed(1)}`,
      'on/off (medians)': s.on.median / s.off.median,
      'on/off per round (median, min..max)': `${s.pairedRatio.median.toFixed(3)} (${s.pairedRatio.min.toFixed(3)}..${s.pairedRatio.max.toFixed(3)})`,
    });
    printTable(`capture (every packet, whole payload, to a file) + metrics (scraped every ${SCRAPE_INTERVAL_MS / 1000} s): ${onOff.scrapes} scrapes, ${onOff.captured} packets captured`, [
      row('host -> guest', stats.hostToGuest),
      row('guest -> host', stats.guestToHost),
    ]);
    const costs = [captureCost(0, 1_000_000), captureCost(1024, 1_000_000), captureCost(65536, 100_000)];
    printTable(`capture alone, PcapCapture.packet() to /dev/null (CPU and allocation, not the disk; ${YOUNG_GEN_MIB} MiB young generation)`, costs.map((c) => ({
      'payload bytes': c.payloadBytes,
      packets: c.packets,
      'ns/packet': Math.round(c.nsPerPacket),
      scavenges: c.scavenges,
      'bytes allocated/packet': Math.round(c.bytesPerPacket),
    })));
    let sibling: { bytes: number; rounds: SiblingRound[]; bootMs: number; ratios: Record<string, Spread>; notificationsPerMb: Record<string, Record<string, number>> } | null = null;
    if (siblings) {
      daemon.vms.get(CID)!.device.tap = null;
      const sibBytes = Math.round((siblingMib * 1024 * 1024) / 65536) * 65536;
      const sr = await siblingRounds(guest, socketB, uds, udsB, sibBytes, 3, { a: daemon.vms.get(CID)!.device, b: daemon.vms.get(SIBLING_CID)!.device });
      const med = (k: keyof SiblingRound): number => percentile(sr.rounds.map((r) => r[k]), 50);
      const ratios = {
        aToBOverAToHost: spreadOf(sr.rounds.map((r) => r.aToB / r.aToHost)),
        bToAOverBToHost: spreadOf(sr.rounds.map((r) => r.bToA / r.bToHost)),
      };
      sibling = { bytes: sibBytes, rounds: sr.rounds, bootMs: sr.bootMs, ratios, notificationsPerMb: { toHost: perMb(sr.notifications.toHost), toSibling: perMb(sr.notifications.toSibling) } };
      printTable(`guest to guest (sibling routing) beside guest to host: ${siblingMib} MiB at 64 KiB writes, socat -u, timed in the sender; medians of ${sr.rounds.length} rounds`, [
        { sender: 'guest A (CID 3)', 'to host MB/s': med('aToHost'), 'to the other guest MB/s': med('aToB'), 'guest/host per round (median, min..max)': `${ratios.aToBOverAToHost.median.toFixed(2)} (${ratios.aToBOverAToHost.min.toFixed(2)}..${ratios.aToBOverAToHost.max.toFixed(2)})` },
        { sender: 'guest B (CID 4)', 'to host MB/s': med('bToHost'), 'to the other guest MB/s': med('bToA'), 'guest/host per round (median, min..max)': `${ratios.bToAOverBToHost.median.toFixed(2)} (${ratios.bToAOverBToHost.min.toFixed(2)}..${ratios.bToAOverBToHost.max.toFixed(2)})` },
      ]);
      printTable('notifications per MB, both senders, all rounds (kicks: driver -> device; irqs: device -> driver)', [
        { transfer: 'guest -> host', ...perMb(sr.notifications.toHost) },
        { transfer: 'guest -> guest', ...perMb(sr.notifications.toSibling) },
      ]);
    }
    const path = writeResults('vhost', {
      sibling,
      command: `npm run bench -- vhost ${argv.join(' ')}`.trim(),
      bytes,
      iterations,
      hostToGuestMBps: h2g,
      guestToHostMBps: g2h,
      pingPong: pp.map((r) => ({ sizeBytes: r.sizeBytes, p50Us: r.p50Us, p99Us: r.p99Us, meanUs: r.meanUs })),
      captureAndMetrics: { roundBytes, rounds: onOff.rounds, scrapeIntervalMs: SCRAPE_INTERVAL_MS, scrapes: onOff.scrapes, packetsCaptured: onOff.captured, ...stats },
      captureCost: costs,
    });
    console.log(`\nresults: ${path}`);
  } finally {
    if (guest?.qemu.running) await guest.qemu.stop();
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
