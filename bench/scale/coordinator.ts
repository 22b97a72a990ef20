// The scale bench's run: one daemon process, load processes with the simulated guests,
// and the phases in order:
//   idle       the daemon with every VM declared and none attached (the "idle process")
//   attach     every VM attached, no connection; then M connections each, idle
//   rounds     quiet (no load) and busy (VM 1 floods, the others paced) windows in turn,
//              the order flipped each round; ping-pong on the probe VM in both
//   churn      busy, while VMs detach (in order, or vanishing) and attach again
//   bad input  busy, while 4 VMs misbehave (stop consuming, kick in a loop, remap their
//              memory, vanish mid-transfer)
//   finish     every connection ends both ways: byte counts and SHA-256 compared
//   detach     every VM leaves: the daemon's counters and fds must be back to idle
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { percentile } from '../report.js';
import type { ScaleArgs } from './args.js';
import { type DaemonProcess, type Metrics, type ProcSample, metricSum, sampleProcess, scrapeMetrics, setRealtimePriority, startDaemonProcess } from './daemon-process.js';
import { type CpuSplit, allowedCpus, formatCpuList, pinProcess, planCpuSplit } from './cpu-split.js';
import { median, spreadOf } from './fairness.js';
import type { ConnectionCounters, GeneratorOptions, VmPlan } from './load-generator.js';
import type { SendMode } from './checked-connection.js';
import { LoadWorker } from './worker-pool.js';
import type { FinishSummary, Misbehaviour, ProcessUsage } from './worker-protocol.js';
import { type WindowThroughput, windowThroughput } from './window.js';
import { EVENT_LOOP_DELAY_BUCKETS_SECONDS } from '../../drivers/virtio-vsock/daemon/event-loop-delay.js';

const FIRST_CID = 3;
const FINISH_TIMEOUT_MS = 60_000;
const BAD_INPUTS: Misbehaviour[] = ['stop-consuming', 'kick-storm', 'remap-memory', 'vanish'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function freeTcpPorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<import('node:net').Server>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as import('node:net').AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

export interface LoopDelay {
  /** Upper bound of the bucket holding the 50th / 99th percentile sample (seconds -> ms). */
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  samples: number;
}

/** Event-loop delay of the daemon between two scrapes (nodejs_eventloop_delay_seconds). */
function loopDelayBetween(a: Metrics, b: Metrics): LoopDelay {
  const bounds = [...EVENT_LOOP_DELAY_BUCKETS_SECONDS.map(String), '+Inf'];
  const cumulative = bounds.map((le) => (b.get(`nodejs_eventloop_delay_seconds_bucket{le="${le}"}`) ?? 0) - (a.get(`nodejs_eventloop_delay_seconds_bucket{le="${le}"}`) ?? 0));
  const count = cumulative[cumulative.length - 1]!;
  const at = (p: number): number => {
    const i = cumulative.findIndex((c) => c >= p * count);
    return i < EVENT_LOOP_DELAY_BUCKETS_SECONDS.length ? EVENT_LOOP_DELAY_BUCKETS_SECONDS[i]! * 1000 : Infinity;
  };
  const sum = (b.get('nodejs_eventloop_delay_seconds_sum') ?? 0) - (a.get('nodejs_eventloop_delay_seconds_sum') ?? 0);
  return { p50Ms: at(0.5), p99Ms: at(0.99), meanMs: count > 0 ? (sum / count) * 1000 : NaN, samples: count };
}

/** Fraction of the window the daemon's event loop was busy (nodejs_eventloop_time_seconds_total). */
function loopUtilization(a: Metrics, b: Metrics): number {
  const active = metricSum(b, 'nodejs_eventloop_time_seconds_total', 'state="active"') - metricSum(a, 'nodejs_eventloop_time_seconds_total', 'state="active"');
  const idle = metricSum(b, 'nodejs_eventloop_time_seconds_total', 'state="idle"') - metricSum(a, 'nodejs_eventloop_time_seconds_total', 'state="idle"');
  return active / (active + idle);
}

export interface PingFigures {
  samples: number;
  p50Us: number;
  p99Us: number;
}

function pingFigures(rtts: number[]): PingFigures {
  return { samples: rtts.length, p50Us: percentile(rtts, 50), p99Us: percentile(rtts, 99) };
}

export interface WindowReport {
  kind: string;
  seconds: number;
  ping: PingFigures | null;
  throughput: WindowThroughput | null;
  daemon: {
    /** CPU cores used (CPU seconds per second). */
    cores: number;
    /** Seconds per second the event loop's thread waited for a CPU while runnable, and the mean wait per time slice (ms). */
    runQueueWait: number;
    waitPerSliceMs: number;
    loopUtilization: number;
    loopDelay: LoopDelay;
    /** Largest private (anonymous) resident memory seen. */
    peakRssAnonBytes: number;
    peakRssBytes: number;
    hostBufferedBytes: number;
    /** V8 heap in use and memory of Buffers (external) at the end of the window. */
    heapUsedBytes: number;
    externalBytes: number;
  };
  /** CPU cores used by each load process (a saturated one, near 1, limits what it offers). */
  loadProcessCores: number[];
  /** Seconds per second the ping-pong's own process waited for a CPU. */
  probeRunQueueWait: number;
}

interface Layout {
  dir: string;
  plans: VmPlan[];
  probe: VmPlan;
  floodCids: number[];
  badCids: number[];
  churnCids: number[];
  /** VMs measured in every window: all but the probe, the misbehaving and the churned ones. */
  steadyCids: number[];
}

function layout(args: ScaleArgs, ports: number[]): Layout {
  const dir = mkdtempSync(join(tmpdir(), 'scale-'));
  const plan = (i: number, tcp: number | null): VmPlan => ({ cid: FIRST_CID + i, socketPath: join(dir, `vm${FIRST_CID + i}.sock`), udsPath: join(dir, `vm${FIRST_CID + i}.vsock`), tcpPort: tcp });
  const plans = Array.from({ length: args.vms }, (_, i) => plan(i, ports[i]!));
  const cids = plans.map((p) => p.cid);
  const floods = Math.min(args.floodVms, args.vms - BAD_INPUTS.length - 2);
  const badCids = cids.slice(floods, floods + BAD_INPUTS.length);
  const churnCount = Math.max(1, Math.min(4, Math.floor(args.vms / 16)));
  const churnCids = cids.slice(floods + BAD_INPUTS.length, floods + BAD_INPUTS.length + churnCount);
  const steadyCids = cids.filter((c) => !badCids.includes(c) && !churnCids.includes(c));
  // The flooding VMs are greedy guests (load-generator.ts): as much per kick as a guest may post.
  for (const p of plans.slice(0, floods)) p.greedy = true;
  return { dir, plans, probe: plan(args.vms, null), floodCids: cids.slice(0, floods), badCids, churnCids, steadyCids };
}

export class ScaleRun {
  private daemon: DaemonProcess | null = null;
  private workers: LoadWorker[] = [];
  private probeWorker: LoadWorker | null = null;
  private lay: Layout | null = null;
  private readonly workerOf = new Map<number, LoadWorker>();
  /** The CPUs the bench started with. */
  private readonly allowed = allowedCpus();
  private split: CpuSplit | null = null;
  readonly results: Record<string, unknown> = {};

  constructor(private readonly args: ScaleArgs) {}

  private log(line: string): void {
    console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
  }

  async run(): Promise<Record<string, unknown>> {
    const a = this.args;
    this.results.load = { atStart: loadavg() };
    const ports = await freeTcpPorts(a.vms);
    const lay = layout(a, ports);
    this.lay = lay;
    const split = planCpuSplit(a.daemonCpus, this.allowed);
    this.split = split;
    this.results.cpus = { pinned: split !== null, daemon: split?.daemon ?? this.allowed, load: split?.load ?? this.allowed };
    // The coordinator moves first: the load processes it forks inherit its CPUs.
    if (split) pinProcess(process.pid, split.load);
    this.log(split ? `CPUs: the daemon and the ping-pong's process on ${formatCpuList(split.daemon)}, the load processes on ${formatCpuList(split.load)}` : `CPUs: every process on any of ${formatCpuList(this.allowed)} (not pinned)`);
    const vmFlags = [...lay.plans, lay.probe].flatMap((p) => ['--vm', `guest-cid=${p.cid},socket=${p.socketPath},uds-path=${p.udsPath}`]);
    const fwdFlags = lay.plans.flatMap((p) => ['--forward', `127.0.0.1:${p.tcpPort}=${p.cid}:5000`]);
    this.daemon = await startDaemonProcess([...vmFlags, ...fwdFlags, '--log-level', 'info', ...(a.daemonThreads !== null ? ['--threads', a.daemonThreads] : [])], { root: a.daemonRoot, nodeArgs: a.daemonNodeArgs, nice: a.daemonNice, rtPriority: a.daemonRt, showStdout: a.daemonStdout, ...(split ? { cpus: split.daemon } : {}) });
    const d = this.daemon;
    await sleep(1000);
    const idle = sampleProcess(d.pid);
    const idleMetrics = await scrapeMetrics(d.metricsUrl);
    this.log(`daemon up (pid ${d.pid}), ${a.vms + 1} VMs declared: RSS ${mib(idle.rssBytes)} (private ${mib(idle.rssAnonBytes)}), ${idle.fds} fds`);

    const options: GeneratorOptions = {
      // Connects wait as long as the host ends do (10 s): under overload the answer is late, not lost.
      driver: { ring: a.ring, rxBuffers: 32, txSlots: 32, connectTimeoutMs: 10_000 },
      memoryBytes: 16 << 20,
      pacing: { rate: a.rate, chunk: a.chunk },
    };
    // The flooding VMs get a load process of their own: sharing one, they would slow the
    // paced VMs there, and the bench would blame the daemon for the load generator.
    const paced = Array.from({ length: a.workers }, (_, k) => new LoadWorker(`load process ${k + 1}`));
    const flood = lay.floodCids.length > 0 ? new LoadWorker('flood process') : null;
    this.workers = flood ? [flood, ...paced] : paced;
    this.probeWorker = new LoadWorker('probe process');
    // The ping-pong's own process runs at the daemon's priority: its round trips then
    // measure the daemon, not how long the probe waited for a CPU. Measured: with only one
    // of the two at the real-time policy the quiet VM's p99 stayed 7-12x its idle p99; with
    // both, 3.4-3.7x (bench/scale/README.md).
    if (split) pinProcess(this.probeWorker.pid, split.daemon);
    if (a.daemonNice !== 0) setPriority(this.probeWorker.pid, a.daemonNice);
    if (a.daemonRt !== 0) setRealtimePriority(this.probeWorker.pid, a.daemonRt);
    await Promise.all([...this.workers, this.probeWorker].map((w) => w.request({ op: 'init', options })));
    lay.plans.filter((p) => !lay.floodCids.includes(p.cid)).forEach((p, i) => this.workerOf.set(p.cid, paced[i % paced.length]!));
    for (const cid of lay.floodCids) this.workerOf.set(cid, flood!);
    this.workerOf.set(lay.probe.cid, this.probeWorker);

    // ---- attach, open
    let t0 = performance.now();
    await Promise.all([...this.workers, this.probeWorker].map((w) => w.request({ op: 'attach', plans: this.plansOf(w) })));
    this.log(`${a.vms + 1} VMs attached in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await sleep(1000);
    const attached = sampleProcess(d.pid);
    t0 = performance.now();
    const opened = await Promise.all(this.workers.map((w) => w.request({ op: 'open', cids: this.cidsOf(w, lay.plans.map((p) => p.cid)), perVm: a.conns })));
    const openFailures = opened.flatMap((o) => o.failed);
    const openCount = opened.reduce((n, o) => n + o.opened, 0);
    this.log(`${openCount} connections open in ${((performance.now() - t0) / 1000).toFixed(1)} s${openFailures.length ? `, ${openFailures.length} failed: ${openFailures.slice(0, 3).join('; ')}` : ''}`);
    await this.probeWorker.request({ op: 'ping-open', cid: lay.probe.cid, size: a.pingSize });
    await sleep(2000);
    const openIdle = sampleProcess(d.pid);
    const openMetrics = await scrapeMetrics(d.metricsUrl);
    this.results.setup = {
      vms: a.vms,
      connectionsPerVm: a.conns,
      connectionsOpen: openCount,
      connectionsRefused: openFailures.length,
      openFailures: openFailures.slice(0, 20),
      daemonConnectionsOpen: metricSum(openMetrics, 'vsock_connections_open'),
      idle,
      attached,
      openIdle,
      perVmAttachedBytes: (attached.rssAnonBytes - idle.rssAnonBytes) / (a.vms + 1),
      perConnectionIdleBytes: (openIdle.rssAnonBytes - attached.rssAnonBytes) / Math.max(1, openCount),
    };
    void idleMetrics;

    // ---- rounds
    const rounds: Array<{ quiet: WindowReport; busy: WindowReport; order: string }> = [];
    for (let r = 0; r < a.rounds; r++) {
      const order: Array<'quiet' | 'busy'> = r % 2 === 0 ? ['quiet', 'busy'] : ['busy', 'quiet'];
      const got: Partial<Record<'quiet' | 'busy', WindowReport>> = {};
      for (const kind of order) {
        got[kind] = kind === 'quiet' ? await this.quietWindow() : await this.busyWindow('busy', a.busySeconds, new Set(lay.steadyCids.concat(lay.badCids, lay.churnCids)));
        this.printWindow(`round ${r + 1} ${kind}`, got[kind]!);
      }
      rounds.push({ quiet: got.quiet!, busy: got.busy!, order: order.join('/') });
      await this.setModes(this.allCids(), 'idle');
      await sleep(1000);
    }
    this.results.rounds = rounds;

    // ---- churn
    this.results.churn = await this.churnPhase();
    // ---- bad input
    this.results.badInput = await this.badInputPhase();

    // ---- finish: every stream ends, both ways checked
    await this.setModes(this.allCids(), 'idle');
    await sleep(500);
    t0 = performance.now();
    const summaries = await Promise.all(this.workers.map((w) => w.request({ op: 'finish', cids: this.cidsOf(w, lay.plans.map((p) => p.cid)), timeoutMs: FINISH_TIMEOUT_MS })));
    const finish = mergeFinish(summaries);
    this.log(`finish: ${finish.ok} of ${finish.connections} connections intact (${mib(finish.hostToGuestBytes)} host -> guest, ${mib(finish.guestToHostBytes)} guest -> host checked), ${finish.failedCount} failed, ${finish.stuckCount} stuck, ${finish.neverOpened} never opened (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    for (const f of [...finish.failed, ...finish.stuck].slice(0, 10)) this.log(`  cid ${f.cid} ${f.kind} #${f.id}: ${f.problems.join('; ')}`);
    this.results.finish = finish;

    // ---- detach: back to idle
    await Promise.all([...this.workers, this.probeWorker].map((w) => w.request({ op: 'detach', cids: this.cidsOf(w, this.allCids().concat(lay.probe.cid)), how: 'orderly' })));
    await sleep(2000);
    const after = sampleProcess(d.pid);
    const afterMetrics = await scrapeMetrics(d.metricsUrl);
    const back = {
      process: after,
      connectionsOpen: metricSum(afterMetrics, 'vsock_connections_open'),
      vmsAttached: metricSum(afterMetrics, 'vsock_vm_attached'),
      hostBufferedBytes: metricSum(afterMetrics, 'vsock_host_buffered_bytes'),
      connectionsOpened: metricSum(afterMetrics, 'vsock_connections_opened_total'),
      connectionsClosed: metricSum(afterMetrics, 'vsock_connections_closed_total'),
      fdsAboveIdle: after.fds - idle.fds,
      rssAnonAboveIdleBytes: after.rssAnonBytes - idle.rssAnonBytes,
    };
    this.results.afterDetach = back;
    this.log(`after every VM detached: ${back.connectionsOpen} connections open, ${back.vmsAttached} VMs attached, ${back.hostBufferedBytes} bytes buffered, fds ${after.fds} (idle ${idle.fds}), private RSS ${mib(after.rssAnonBytes)} (idle ${mib(idle.rssAnonBytes)})`);
    this.results.load = { ...(this.results.load as object), atEnd: loadavg() };
    this.results.targets = this.targets(rounds, finish, back, openCount);
    return this.results;
  }

  async cleanup(): Promise<void> {
    await Promise.all([...this.workers, ...(this.probeWorker ? [this.probeWorker] : [])].map((w) => w.stop()));
    await this.daemon?.stop();
    if (this.lay) rmSync(this.lay.dir, { recursive: true, force: true });
    if (this.split) pinProcess(process.pid, this.allowed);
  }

  // ---- helpers

  private allCids(): number[] {
    return this.lay!.plans.map((p) => p.cid);
  }

  private plansOf(w: LoadWorker): VmPlan[] {
    return [...this.lay!.plans, this.lay!.probe].filter((p) => this.workerOf.get(p.cid) === w);
  }

  private cidsOf(w: LoadWorker, cids: readonly number[]): number[] {
    return cids.filter((c) => this.workerOf.get(c) === w);
  }

  private async setModes(cids: readonly number[], mode: SendMode): Promise<void> {
    await Promise.all(this.workers.map((w) => w.request({ op: 'mode', cids: this.cidsOf(w, cids), mode })));
  }

  /** The flooding VMs flood, every other VM is paced. */
  private async loadOn(): Promise<void> {
    const lay = this.lay!;
    await this.setModes(this.allCids().filter((c) => !lay.floodCids.includes(c)), 'paced');
    await this.setModes(lay.floodCids, 'flood');
  }

  private async counters(): Promise<ConnectionCounters[]> {
    return (await Promise.all(this.workers.map((w) => w.request({ op: 'counters' })))).flat();
  }

  private async usage(): Promise<ProcessUsage[]> {
    return Promise.all(this.workers.map((w) => w.request({ op: 'usage' })));
  }

  private async quietWindow(): Promise<WindowReport> {
    await this.setModes(this.allCids(), 'idle');
    await sleep(1000);
    return this.measure('quiet', this.args.quietSeconds, null);
  }

  private async busyWindow(kind: string, seconds: number, measured: ReadonlySet<number>): Promise<WindowReport> {
    await this.loadOn();
    await sleep(2000); // the flood and the paced streams settle
    return this.measure(kind, seconds, measured);
  }

  /**
   * One window: ping-pong on the probe VM for `seconds` while the daemon's CPU, memory and
   * loop are watched; with `measured`, the throughput of those VMs' connections too.
   */
  private async measure(kind: string, seconds: number, measured: ReadonlySet<number> | null, during?: () => Promise<void>): Promise<WindowReport> {
    const d = this.daemon!;
    const c0 = measured ? await this.counters() : [];
    const u0 = await this.usage();
    const m0 = await scrapeMetrics(d.metricsUrl);
    const p0 = sampleProcess(d.pid);
    const probe0 = sampleProcess(this.probeWorker!.pid);
    let peak = p0;
    let stop = false;
    const watcher = (async (): Promise<void> => {
      while (!stop) {
        await sleep(500);
        const s = sampleProcess(d.pid);
        if (s.rssAnonBytes > peak.rssAnonBytes) peak = s;
      }
    })();
    const [rtts] = await Promise.all([this.probeWorker!.request({ op: 'ping', ms: seconds * 1000 }), during?.()]);
    stop = true;
    await watcher;
    const p1 = sampleProcess(d.pid);
    const probe1 = sampleProcess(this.probeWorker!.pid);
    const m1 = await scrapeMetrics(d.metricsUrl);
    const u1 = await this.usage();
    const c1 = measured ? await this.counters() : [];
    const wall = (p1.at - p0.at) / 1000;
    return {
      kind,
      seconds: wall,
      ping: pingFigures(rtts),
      throughput: measured
        ? windowThroughput({ before: c0, after: c1, seconds: wall, cids: measured, floodCids: new Set(this.lay!.floodCids), pacedVmDemand: 2 * this.args.rate * this.args.conns })
        : null,
      daemon: {
        cores: (p1.cpuSeconds - p0.cpuSeconds) / wall,
        runQueueWait: (p1.runQueueWaitSeconds - p0.runQueueWaitSeconds) / wall,
        waitPerSliceMs: (1000 * (p1.runQueueWaitSeconds - p0.runQueueWaitSeconds)) / Math.max(1, p1.timeslices - p0.timeslices),
        loopUtilization: loopUtilization(m0, m1),
        loopDelay: loopDelayBetween(m0, m1),
        peakRssAnonBytes: Math.max(peak.rssAnonBytes, p1.rssAnonBytes),
        peakRssBytes: Math.max(peak.rssBytes, p1.rssBytes),
        hostBufferedBytes: metricSum(m1, 'vsock_host_buffered_bytes'),
        heapUsedBytes: metricSum(m1, 'nodejs_heap_size_used_bytes'),
        externalBytes: metricSum(m1, 'nodejs_external_memory_bytes'),
      },
      loadProcessCores: u1.map((u, i) => (u.cpuSeconds - u0[i]!.cpuSeconds) / wall),
      probeRunQueueWait: (probe1.runQueueWaitSeconds - probe0.runQueueWaitSeconds) / wall,
    };
  }

  private printWindow(title: string, w: WindowReport): void {
    const t = w.throughput;
    const ping = w.ping ? `ping p50 ${w.ping.p50Us.toFixed(0)} us p99 ${w.ping.p99Us.toFixed(0)} us (${w.ping.samples})` : '';
    const load = t
      ? `; paced conn ${kb(t.pacedConnection.min)}/${kb(t.pacedConnection.median)}/${kb(t.pacedConnection.max)} KB/s, flood VM ${mb(t.floodVm.median)} MB/s, below 0.5x median ${t.belowHalfMedian}, stalled ${t.stalled}, Jain VMs ${t.jainVmsFairShare.toFixed(3)}`
      : '';
    this.log(
      `${title}: ${ping}${load}; daemon ${w.daemon.cores.toFixed(2)} cores (waited for a CPU ${(w.daemon.runQueueWait * 100).toFixed(0)}% of the time, ${w.daemon.waitPerSliceMs.toFixed(2)} ms per slice), loop busy ${(w.daemon.loopUtilization * 100).toFixed(0)}%, delay p99 <= ${w.daemon.loopDelay.p99Ms} ms, private RSS ${mib(w.daemon.peakRssAnonBytes)}; load processes ${w.loadProcessCores.map((c) => c.toFixed(2)).join(' ')} cores`,
    );
  }

  // ---- churn

  private async churnPhase(): Promise<object> {
    const a = this.args;
    const lay = this.lay!;
    await this.loadOn();
    await sleep(2000);
    let cycles = 0;
    let reopened = 0;
    let reopenFailures: string[] = [];
    let dropped = 0;
    const churn = async (): Promise<void> => {
      const until = performance.now() + a.churnSeconds * 1000;
      let k = 0;
      while (performance.now() < until) {
        const cid = lay.churnCids[k % lay.churnCids.length]!;
        const how = k % 2 === 0 ? 'orderly' : 'vanish';
        k++;
        const w = this.workerOf.get(cid)!;
        await w.request({ op: 'detach', cids: [cid], how });
        dropped += await w.request({ op: 'drop-closed', cids: [cid] });
        await w.request({ op: 'attach', plans: [lay.plans.find((p) => p.cid === cid)!] });
        const o = await w.request({ op: 'open', cids: [cid], perVm: a.conns });
        reopened += o.opened;
        reopenFailures = reopenFailures.concat(o.failed).slice(0, 20);
        await w.request({ op: 'mode', cids: [cid], mode: 'paced' });
        cycles++;
        await sleep(a.churnEveryMs);
      }
    };
    const w = await this.measure('churn', a.churnSeconds, new Set(lay.steadyCids), churn);
    this.printWindow(`churn (${cycles} detach/attach cycles)`, w);
    return { window: w, cycles, connectionsDropped: dropped, connectionsReopened: reopened, reopenFailures };
  }

  // ---- bad input

  private async badInputPhase(): Promise<object> {
    const a = this.args;
    const lay = this.lay!;
    await this.loadOn();
    await sleep(2000);
    const d = this.daemon!;
    const m0 = await scrapeMetrics(d.metricsUrl);
    const perVm: Record<string, object> = {};
    const misbehave = async (): Promise<void> => {
      for (let i = 0; i < BAD_INPUTS.length; i++) {
        const cid = lay.badCids[i]!;
        const what = BAD_INPUTS[i]!;
        if (what === 'vanish') continue;
        await this.workerOf.get(cid)!.request({ op: 'misbehave', cid, what, on: true });
      }
      await sleep((a.badSeconds * 1000) / 2);
      const vanishCid = lay.badCids[BAD_INPUTS.indexOf('vanish')]!;
      await this.workerOf.get(vanishCid)!.request({ op: 'misbehave', cid: vanishCid, what: 'vanish', on: true });
    };
    const w = await this.measure('bad input', a.badSeconds, new Set(lay.steadyCids), misbehave);
    const m1 = await scrapeMetrics(d.metricsUrl);
    for (let i = 0; i < BAD_INPUTS.length; i++) {
      const cid = lay.badCids[i]!;
      const what = BAD_INPUTS[i]!;
      const worker = this.workerOf.get(cid)!;
      const done = what === 'vanish' ? { stormKicks: 0, remaps: 0 } : await worker.request({ op: 'misbehave', cid, what, on: false });
      const delta = (name: string, ...labels: string[]): number => metricSum(m1, name, `cid="${cid}"`, ...labels) - metricSum(m0, name, `cid="${cid}"`, ...labels);
      perVm[what] = {
        cid,
        ...done,
        hostBufferedBytesAtEnd: metricSum(m1, 'vsock_host_buffered_bytes', `cid="${cid}"`),
        connectionsOpenAtEnd: metricSum(m1, 'vsock_connections_open', `cid="${cid}"`),
        attachedAtEnd: metricSum(m1, 'vsock_vm_attached', `cid="${cid}"`),
        txKicks: delta('vsock_ring_kicks_total', 'queue="tx"'),
        creditStallsHostToGuest: delta('vsock_credit_stalls_total', 'direction="host_to_guest"'),
        connectionsClosed: delta('vsock_connections_closed_total'),
        bytesMoved: delta('vsock_payload_bytes_total'),
      };
    }
    const vanishCid = lay.badCids[BAD_INPUTS.indexOf('vanish')]!;
    await this.workerOf.get(vanishCid)!.request({ op: 'drop-closed', cids: [vanishCid] });
    this.printWindow('bad input', w);
    for (const [what, v] of Object.entries(perVm)) this.log(`  ${what}: ${JSON.stringify(v)}`);
    return { window: w, perVm };
  }

  // ---- targets

  private targets(rounds: Array<{ quiet: WindowReport; busy: WindowReport }>, finish: FinishSummary, back: { connectionsOpen: number; vmsAttached: number; hostBufferedBytes: number; fdsAboveIdle: number }, openCount: number): object {
    const busy = rounds.map((r) => r.busy.throughput!);
    const worstBelow = Math.max(...busy.map((t) => t.belowHalfMedian));
    const worstStalled = Math.max(...busy.map((t) => t.stalled));
    const jain = busy.map((t) => t.jainVmsFairShare);
    const ratios = rounds.map((r) => r.busy.ping!.p99Us / r.quiet.ping!.p99Us);
    const setup = this.results.setup as { idle: ProcSample };
    const peak = Math.max(...rounds.map((r) => r.busy.daemon.peakRssAnonBytes));
    const memAbove = peak - setup.idle.rssAnonBytes;
    const budget = 64 * 1024 * openCount + (1 << 20) * (this.args.vms + 1);
    return {
      allProgress: { met: worstBelow === 0 && worstStalled === 0 && openCount === this.args.vms * this.args.conns, connectionsBelowHalfMedian: worstBelow, stalledConnections: worstStalled, slowestOverMedian: Math.min(...busy.map((t) => t.allConnections.min / t.allConnections.median)) },
      jainAcrossVms: { met: Math.min(...jain) >= 0.9, perRound: jain },
      pingP99Ratio: { met: median(ratios) <= 5, perRound: ratios, median: median(ratios), spread: spreadOf(ratios) },
      memory: { met: memAbove <= budget, peakPrivateAboveIdleBytes: memAbove, budgetBytes: budget, perConnectionBytes: memAbove / openCount },
      intact: { met: finish.failedCount === 0 && finish.stuckCount === 0, failed: finish.failedCount, stuck: finish.stuckCount },
      backToIdle: { met: back.connectionsOpen === 0 && back.vmsAttached === 0 && back.hostBufferedBytes === 0 && back.fdsAboveIdle <= 0, ...back },
    };
  }
}

function mergeFinish(s: FinishSummary[]): FinishSummary {
  return {
    connections: s.reduce((n, x) => n + x.connections, 0),
    neverOpened: s.reduce((n, x) => n + x.neverOpened, 0),
    ok: s.reduce((n, x) => n + x.ok, 0),
    hostToGuestBytes: s.reduce((n, x) => n + x.hostToGuestBytes, 0),
    guestToHostBytes: s.reduce((n, x) => n + x.guestToHostBytes, 0),
    failed: s.flatMap((x) => x.failed).slice(0, 50),
    failedCount: s.reduce((n, x) => n + x.failedCount, 0),
    stuck: s.flatMap((x) => x.stuck).slice(0, 50),
    stuckCount: s.reduce((n, x) => n + x.stuckCount, 0),
  };
}

const mib = (b: number): string => `${(b / (1 << 20)).toFixed(1)} MiB`;
const kb = (b: number): string => (b / 1000).toFixed(2);
const mb = (b: number): string => (b / 1e6).toFixed(1);
