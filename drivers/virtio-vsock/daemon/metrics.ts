// The daemon's counters in the Prometheus text exposition format (version 0.0.4):
// per VM (label cid) the device's connections, bytes and packets each way, refusals and
// drops by reason, credit stalls, ring kicks and interrupts, and its host ends; per
// capture file its records and state; per process its memory and CPU time. Names carry
// their unit and counters end in _total, as Prometheus' naming conventions ask.
import { performance } from 'node:perf_hooks';
import { DROP_REASONS, type VsockDeviceStats } from '../device/stats.js';
import { EVENT_LOOP_DELAY_BUCKETS_SECONDS, type EventLoopDelaySampler } from './event-loop-delay.js';
import { HOST_REFUSAL_REASONS, type HostEndStats } from '../host/host-stats.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface DeviceMetricsSource {
  readonly stats: VsockDeviceStats;
  readonly connections: number;
  readonly hostBufferedBytes: number;
  readonly heldTxChains?: number;
  readonly attached: boolean;
  /** Connections with sibling guests, and their bytes waiting for this guest's rx buffers (optional: 0). */
  readonly siblingConnections?: number;
  readonly siblingQueuedBytes?: number;
}

export interface VmMetricsSource {
  cid: number;
  device: DeviceMetricsSource;
  /** The hybrid socket: its counters and path. */
  hybrid: { readonly stats: HostEndStats; readonly listen: string } | null;
  forwards: ReadonlyArray<{ readonly stats: HostEndStats; readonly listen: string; readonly guestPort: number }>;
}

export interface CaptureMetricsSource {
  readonly path: string;
  readonly records: number;
  readonly bytesWritten: number;
  readonly active: boolean;
  readonly failure: Error | null;
}

export interface MetricsHttpStats {
  requests: number;
  /** Requests refused: malformed, too large, wrong method or path. */
  badRequests: number;
}

type Labels = Record<string, string | number>;
type Sample = [Labels, number];

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

class Exposition {
  readonly #lines: string[] = [];

  family(name: string, type: 'counter' | 'gauge', help: string, samples: readonly Sample[]): void {
    this.#lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const l = Object.entries(labels)
        .map(([k, v]) => `${k}="${escapeLabel(String(v))}"`)
        .join(',');
      this.#lines.push(`${name}${l ? `{${l}}` : ''} ${formatValue(value)}`);
    }
  }

  /** A histogram: cumulative _bucket{le} samples, _sum and _count (counts per bucket given not cumulative, +Inf last). */
  histogram(name: string, help: string, bounds: readonly number[], counts: ArrayLike<number>, sum: number): void {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    let cumulative = 0;
    for (let i = 0; i <= bounds.length; i++) {
      cumulative += counts[i]!;
      this.#lines.push(`${name}_bucket{le="${i < bounds.length ? formatValue(bounds[i]!) : '+Inf'}"} ${cumulative}`);
    }
    this.#lines.push(`${name}_sum ${formatValue(sum)}`, `${name}_count ${cumulative}`);
  }

  text(): string {
    return `${this.#lines.join('\n')}\n`;
  }
}

const QUEUES = ['rx', 'tx', 'event'] as const;

function perVm(vms: readonly VmMetricsSource[], f: (vm: VmMetricsSource, s: VsockDeviceStats) => Sample[]): Sample[] {
  return vms.flatMap((vm) => f(vm, vm.device.stats));
}

/** Every host end of every VM with its labels: the hybrid socket, then the TCP forwards. */
function hostEnds(vms: readonly VmMetricsSource[]): Array<{ labels: Labels; stats: HostEndStats }> {
  const out: Array<{ labels: Labels; stats: HostEndStats }> = [];
  for (const vm of vms) {
    if (vm.hybrid) out.push({ labels: { cid: vm.cid, end: 'hybrid', listen: vm.hybrid.listen, guest_port: '' }, stats: vm.hybrid.stats });
    for (const f of vm.forwards) out.push({ labels: { cid: vm.cid, end: 'tcp', listen: f.listen, guest_port: f.guestPort }, stats: f.stats });
  }
  return out;
}

function deviceFamilies(e: Exposition, vms: readonly VmMetricsSource[]): void {
  e.family('vsock_vm_attached', 'gauge', 'Whether a driver has the device running (1: a front end is connected and the guest started the rx and tx queues).', perVm(vms, (vm) => [[{ cid: vm.cid }, vm.device.attached ? 1 : 0]]));
  e.family('vsock_connections_open', 'gauge', 'Connections open now (any state).', perVm(vms, (vm) => [[{ cid: vm.cid }, vm.device.connections]]));
  e.family('vsock_connections_opened_total', 'counter', 'Connections established (RESPONSE sent or received).', perVm(vms, (vm, s) => [[{ cid: vm.cid }, s.connectionsOpened]]));
  e.family('vsock_connections_closed_total', 'counter', 'Connections closed (any way).', perVm(vms, (vm, s) => [[{ cid: vm.cid }, s.connectionsClosed]]));
  e.family('vsock_payload_bytes_total', 'counter', 'Payload bytes moved, by direction.', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, direction: 'guest_to_host' }, s.txBytes],
    [{ cid: vm.cid, direction: 'host_to_guest' }, s.rxBytes],
  ]));
  e.family('vsock_packets_total', 'counter', 'Packets moved (header and payload), by direction: taken from the tx queue, written into rx buffers.', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, direction: 'guest_to_host' }, s.txPackets],
    [{ cid: vm.cid, direction: 'host_to_guest' }, s.rxPackets],
  ]));
  e.family('vsock_guest_packets_refused_total', 'counter', 'Guest packets (or chains) dropped or answered with RST, by reason (drivers/virtio-vsock/device/stats.ts).', perVm(vms, (vm, s) => DROP_REASONS.map((r): Sample => [{ cid: vm.cid, reason: r }, s.dropped[r]])));
  e.family('vsock_rst_packets_total', 'counter', 'RST packets, by direction.', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, direction: 'guest_to_host' }, s.rstReceived],
    [{ cid: vm.cid, direction: 'host_to_guest' }, s.rstSent],
  ]));
  e.family('vsock_credit_stalls_total', 'counter', 'Times data stopped for want of credit: host_to_guest, the guest granted no more (one CREDIT_REQUEST each); guest_to_host, the guest filled the window we advertise (a slow host reader).', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, direction: 'host_to_guest' }, s.hostToGuestCreditStalls],
    [{ cid: vm.cid, direction: 'guest_to_host' }, s.guestToHostCreditStalls],
  ]));
  e.family('vsock_credit_packets_sent_total', 'counter', 'CREDIT_UPDATE and CREDIT_REQUEST packets sent to the guest.', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, op: 'credit_update' }, s.creditUpdatesSent],
    [{ cid: vm.cid, op: 'credit_request' }, s.creditRequestsSent],
  ]));
  e.family('vsock_sibling_connections_open', 'gauge', 'Connections with sibling guests (--vm group=) open now, any state.', perVm(vms, (vm) => [[{ cid: vm.cid }, vm.device.siblingConnections ?? 0]]));
  e.family('vsock_sibling_sent_total', 'counter', 'What this guest sent to sibling guests: packets and payload bytes.', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, unit: 'packets' }, s.siblingPackets],
    [{ cid: vm.cid, unit: 'bytes' }, s.siblingBytes],
  ]));
  e.family('vsock_sibling_credit_updates_held_total', 'counter', 'CREDIT_UPDATEs of this guest to a sibling held back while the sibling still saw half the window free (a newer packet replaced each, or it went once needed).', perVm(vms, (vm, s) => [
    [{ cid: vm.cid }, s.siblingCreditUpdatesHeld],
  ]));
  e.family('vsock_sibling_queued_bytes', 'gauge', 'Bytes from sibling guests waiting for this guest\'s rx buffers.', perVm(vms, (vm) => [[{ cid: vm.cid }, vm.device.siblingQueuedBytes ?? 0]]));
  e.family('vsock_host_buffered_bytes', 'gauge', 'Bytes held on the host side over all connections, both directions.', perVm(vms, (vm) => [[{ cid: vm.cid }, vm.device.hostBufferedBytes]]));
  e.family('vsock_guest_to_host_bytes_total', 'counter', 'Guest payload bytes for host readers, by how they left guest memory: view (the host socket was written from guest memory, no copy) or copy.', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, how: 'view' }, s.toHostViewBytes],
    [{ cid: vm.cid, how: 'copy' }, s.toHostCopiedBytes],
  ]));
  e.family('vsock_host_to_guest_bytes_total', 'counter', 'Host bytes for the guest, by how they came in: copied (the host socket was read into one reused buffer and the bytes copied out of it: no allocation per read) or as_written (a writer\'s own buffers, queued as they are).', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, how: 'copied' }, s.hostBytesCopied],
    [{ cid: vm.cid, how: 'as_written' }, s.hostBytesAsWritten],
  ]));
  e.family('vsock_tx_chains_held', 'gauge', 'Guest tx buffers kept out of the used ring now, while host sockets are written from them.', perVm(vms, (vm) => [[{ cid: vm.cid }, vm.device.heldTxChains ?? 0]]));
  e.family('vsock_host_discarded_bytes_total', 'counter', 'Host bytes written after the guest shut down its receive side (discarded).', perVm(vms, (vm, s) => [[{ cid: vm.cid }, s.hostBytesDiscarded]]));
  e.family('vsock_ring_kicks_total', 'counter', 'Notifications from the guest driver, by queue.', perVm(vms, (vm, s) => QUEUES.map((q): Sample => [{ cid: vm.cid, queue: q }, s.kicks[q]])));
  e.family('vsock_ring_interrupts_total', 'counter', 'Interrupts sent to the guest driver, by queue.', perVm(vms, (vm, s) => QUEUES.map((q): Sample => [{ cid: vm.cid, queue: q }, s.interrupts[q]])));
  e.family('vsock_transport_reset_events_total', 'counter', 'TRANSPORT_RESET events: sent, or dropped (no event queue or buffer).', perVm(vms, (vm, s) => [
    [{ cid: vm.cid, result: 'sent' }, s.eventsSent],
    [{ cid: vm.cid, result: 'dropped' }, s.eventsDropped],
  ]));
}

function hostEndFamilies(e: Exposition, vms: readonly VmMetricsSource[]): void {
  const ends = hostEnds(vms);
  e.family('vsock_host_clients_total', 'counter', 'Host clients accepted by a host end (hybrid Unix socket, TCP forward).', ends.map((h): Sample => [h.labels, h.stats.accepted]));
  e.family('vsock_host_clients_connected_total', 'counter', 'Host clients joined to a guest connection.', ends.map((h): Sample => [h.labels, h.stats.connected]));
  e.family('vsock_host_clients_refused_total', 'counter', 'Host clients refused, by reason (notAttached: no VM attached, refused at once).', ends.flatMap((h) => HOST_REFUSAL_REASONS.map((r): Sample => [{ ...h.labels, reason: r }, h.stats.refused[r]])));
  const hybrids = vms.filter((vm) => vm.hybrid !== null);
  e.family('vsock_guest_connects_total', 'counter', 'Guest connections to host ports, routed to <uds-path>_<port>; result refused when nothing listens there (RST).', hybrids.flatMap((vm): Sample[] => [
    [{ cid: vm.cid, result: 'routed' }, vm.hybrid!.stats.guestConnects - vm.hybrid!.stats.guestConnectsRefused],
    [{ cid: vm.cid, result: 'refused' }, vm.hybrid!.stats.guestConnectsRefused],
  ]));
}

function captureFamilies(e: Exposition, captures: readonly CaptureMetricsSource[]): void {
  if (captures.length === 0) return;
  e.family('vsock_capture_up', 'gauge', 'Whether the capture file is being written (0: stopped after a write error, see the log).', captures.map((c): Sample => [{ file: c.path }, c.active ? 1 : 0]));
  e.family('vsock_capture_packets_total', 'counter', 'Packets written to the capture file.', captures.map((c): Sample => [{ file: c.path }, c.records]));
  e.family('vsock_capture_written_bytes_total', 'counter', 'Bytes written to the capture file (whole records).', captures.map((c): Sample => [{ file: c.path }, c.bytesWritten]));
  e.family('vsock_capture_errors_total', 'counter', 'Write errors of the capture file (the first one stops it).', captures.map((c): Sample => [{ file: c.path }, c.failure === null ? 0 : 1]));
}

/** One thread's own figures: its V8 heap and its event loop (the daemon has one, or one per VM thread besides the main one). */
export interface LoopFigures {
  /** 'main', or the VM thread's name. */
  thread: string;
  heapTotalBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  /** Event-loop time running callbacks and waiting for events since the thread started (seconds). */
  activeSeconds: number;
  idleSeconds: number;
  /** The loop-delay histogram (EventLoopDelaySampler.counts, not cumulative) and its sum, or null when not sampled. */
  delay: { counts: number[]; sumSeconds: number } | null;
}

/** This thread's figures now (plain data: a VM thread posts them to the main one). */
export function loopFigures(thread: string, loopDelay: EventLoopDelaySampler | null): LoopFigures {
  const mem = process.memoryUsage();
  const elu = performance.eventLoopUtilization();
  return {
    thread,
    heapTotalBytes: mem.heapTotal,
    heapUsedBytes: mem.heapUsed,
    externalBytes: mem.external,
    activeSeconds: elu.active / 1000,
    idleSeconds: elu.idle / 1000,
    delay: loopDelay ? { counts: [...loopDelay.counts], sumSeconds: loopDelay.sumSeconds } : null,
  };
}

/** A VM's figures as plain data (what a VM thread posts; the live objects stay in their thread). */
export function plainVmMetrics(vm: VmMetricsSource): VmMetricsSource {
  const d = vm.device;
  return {
    cid: vm.cid,
    device: {
      stats: structuredClone(d.stats),
      connections: d.connections,
      hostBufferedBytes: d.hostBufferedBytes,
      heldTxChains: d.heldTxChains ?? 0,
      attached: d.attached,
      siblingConnections: d.siblingConnections ?? 0,
      siblingQueuedBytes: d.siblingQueuedBytes ?? 0,
    },
    hybrid: vm.hybrid ? { stats: structuredClone(vm.hybrid.stats), listen: vm.hybrid.listen } : null,
    forwards: vm.forwards.map((f) => ({ stats: structuredClone(f.stats), listen: f.listen, guestPort: f.guestPort })),
  };
}

/** A capture file's figures as plain data. */
export function plainCaptureMetrics(c: CaptureMetricsSource): CaptureMetricsSource {
  return { path: c.path, records: c.records, bytesWritten: c.bytesWritten, active: c.active, failure: c.failure === null ? null : new Error(c.failure.message) };
}

const sumOf = (loops: readonly LoopFigures[], f: (l: LoopFigures) => number): number => loops.reduce((n, l) => n + f(l), 0);

function processFamilies(e: Exposition, http: MetricsHttpStats | null, loops: readonly LoopFigures[]): void {
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  e.family('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', [[{}, mem.rss]]);
  e.family('process_cpu_seconds_total', 'counter', 'User and system CPU time spent in seconds.', [[{}, (cpu.user + cpu.system) / 1e6]]);
  e.family('process_start_time_seconds', 'gauge', 'Start time of the process since the Unix epoch in seconds.', [[{}, Math.round((Date.now() - process.uptime() * 1000) / 1000)]]);
  // Every thread has a V8 heap of its own: the process holds their sum.
  e.family('nodejs_heap_size_total_bytes', 'gauge', 'V8 heap size in bytes (all threads).', [[{}, sumOf(loops, (l) => l.heapTotalBytes)]]);
  e.family('nodejs_heap_size_used_bytes', 'gauge', 'V8 heap used in bytes (all threads).', [[{}, sumOf(loops, (l) => l.heapUsedBytes)]]);
  e.family('nodejs_external_memory_bytes', 'gauge', 'Memory of C++ objects bound to JavaScript objects (Buffers...) in bytes (all threads).', [[{}, sumOf(loops, (l) => l.externalBytes)]]);
  // One event loop: no label (as before VM threads existed); several: one pair per thread.
  const byThread = (l: LoopFigures): Labels => (loops.length > 1 ? { thread: l.thread } : {});
  e.family('nodejs_eventloop_time_seconds_total', 'counter', 'Time the event loop spent running callbacks (active) and waiting for events (idle) since the start, in seconds (per thread when VMs run in threads of their own).', loops.flatMap((l): Sample[] => [
    [{ ...byThread(l), state: 'active' }, l.activeSeconds],
    [{ ...byThread(l), state: 'idle' }, l.idleSeconds],
  ]));
  const sampled = loops.filter((l) => l.delay !== null);
  if (sampled.length > 0) {
    const counts = EVENT_LOOP_DELAY_BUCKETS_SECONDS.map(() => 0).concat(0);
    for (const l of sampled) l.delay!.counts.forEach((c, i) => (counts[i]! += c));
    e.histogram('nodejs_eventloop_delay_seconds', 'How much later than asked a timer set every 20 ms fired: what any event waits behind the work in progress (the samples of every thread).', EVENT_LOOP_DELAY_BUCKETS_SECONDS, counts, sumOf(sampled, (l) => l.delay!.sumSeconds));
  }
  if (http) {
    e.family('vsock_metrics_http_requests_total', 'counter', 'Requests to the metrics HTTP server, by result.', [
      [{ result: 'served' }, http.requests],
      [{ result: 'refused' }, http.badRequests],
    ]);
  }
}

/** The exposition text of every family. */
export function renderMetrics(vms: readonly VmMetricsSource[], captures: readonly CaptureMetricsSource[], http: MetricsHttpStats | null = null, loops: readonly LoopFigures[] = [loopFigures('main', null)]): string {
  const e = new Exposition();
  deviceFamilies(e, vms);
  hostEndFamilies(e, vms);
  captureFamilies(e, captures);
  processFamilies(e, http, loops);
  return e.text();
}
