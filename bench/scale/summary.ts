// The tables `npm run bench -- scale` prints at the end (everything is in scale.json too).
import { printTable } from '../report.js';
import type { WindowReport } from './coordinator.js';
import { formatCpuList } from './cpu-split.js';
import { median } from './fairness.js';

const kbps = (b: number): number => b / 1000;
const mbps = (b: number): number => b / 1e6;
const mib = (b: number): number => b / (1 << 20);

function windowRow(name: string, w: WindowReport): Record<string, string | number> {
  const t = w.throughput;
  return {
    window: name,
    ping_p50_us: w.ping?.p50Us ?? NaN,
    ping_p99_us: w.ping?.p99Us ?? NaN,
    paced_conn_min_KBps: t ? kbps(t.pacedConnection.min) : '',
    paced_conn_med_KBps: t ? kbps(t.pacedConnection.median) : '',
    paced_conn_max_KBps: t ? kbps(t.pacedConnection.max) : '',
    flood_conn_med_KBps: t ? kbps(t.floodConnection.median) : '',
    flood_vm_MBps: t ? mbps(t.floodVm.median) : '',
    paced_vm_med_KBps: t ? kbps(t.pacedVm.median) : '',
    below_half_median: t ? t.belowHalfMedian : '',
    stalled: t ? t.stalled : '',
    jain_vms: t ? t.jainVmsFairShare : '',
    jain_flood_conns: t ? t.jainFloodConnections : '',
    daemon_cores: w.daemon.cores,
    loop_busy_pct: 100 * w.daemon.loopUtilization,
    loop_delay_p99_ms: w.daemon.loopDelay.p99Ms,
    private_rss_MiB: mib(w.daemon.peakRssAnonBytes),
    load_cores: w.loadProcessCores.map((c) => c.toFixed(2)).join(' '),
  };
}

export function printScaleSummary(r: Record<string, unknown>): void {
  const rounds = r.rounds as Array<{ quiet: WindowReport; busy: WindowReport; order: string }>;
  const rows: Array<Record<string, string | number>> = [];
  rounds.forEach((x, i) => {
    rows.push(windowRow(`${i + 1} quiet`, x.quiet));
    rows.push(windowRow(`${i + 1} busy`, x.busy));
  });
  const churn = r.churn as { window: WindowReport };
  const bad = r.badInput as { window: WindowReport };
  rows.push(windowRow('churn', churn.window));
  rows.push(windowRow('bad input', bad.window));
  printTable('windows (KBps/MBps: bytes per second both ways; rss: daemon private memory, peak)', rows);
  const cpus = r.cpus as { pinned: boolean; daemon: number[]; load: number[] };
  console.log(cpus.pinned ? `CPUs: daemon and ping-pong on ${formatCpuList(cpus.daemon)}, load processes on ${formatCpuList(cpus.load)} (--daemon-cpus shared: not pinned)` : `CPUs: not pinned (${formatCpuList(cpus.daemon)})`);
  const setup = r.setup as { vms: number; connectionsOpen: number; idle: { rssAnonBytes: number }; perVmAttachedBytes: number; perConnectionIdleBytes: number };
  const busy = rounds.map((x) => x.busy);
  const cores = busy.map((w) => w.daemon.cores);
  const moved = busy.map((w) => (w.throughput!.hostToGuest + w.throughput!.guestToHost) / 1e6);
  const mem = (r.targets as { memory: { perConnectionBytes: number } }).memory;
  printTable('what the daemon costs (busy rounds: median)', [
    { item: 'private memory of the idle process (every VM declared, none attached)', value: mib(setup.idle.rssAnonBytes), unit: 'MiB' },
    { item: 'private memory per attached VM (no connection)', value: setup.perVmAttachedBytes / 1024, unit: 'KiB' },
    { item: 'private memory per open connection, idle', value: setup.perConnectionIdleBytes / 1024, unit: 'KiB' },
    { item: 'private memory per open connection, busy (peak above idle, over every connection)', value: mem.perConnectionBytes / 1024, unit: 'KiB' },
    { item: 'CPU, busy', value: median(cores), unit: 'cores' },
    { item: 'CPU per attached VM, busy', value: (1000 * median(cores)) / (setup.vms + 1), unit: 'millicores' },
    { item: 'CPU per open connection, busy', value: (1e6 * median(cores)) / setup.connectionsOpen, unit: 'us per s' },
    { item: 'CPU per MB moved, busy', value: (1000 * median(cores)) / median(moved), unit: 'ms' },
  ]);
  const targets = r.targets as Record<string, { met: boolean } & Record<string, unknown>>;
  printTable(
    'targets',
    Object.entries(targets).map(([name, t]) => ({
      target: name,
      met: t.met ? 'met' : 'MISSED',
      figures: JSON.stringify(Object.fromEntries(Object.entries(t).filter(([k]) => k !== 'met' && k !== 'process'))).slice(0, 160),
    })),
  );
}
