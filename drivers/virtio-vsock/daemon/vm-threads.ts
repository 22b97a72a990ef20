// Which VMs share an event loop when the daemon runs VMs in threads of their own
// (--threads): VMs that must meet in one loop stay together: a sibling group routes
// packets between its guests' devices synchronously (sibling-router.ts), and a capture
// file has one writer. The rest is the setting: one thread per such set (per-vm), or at
// most N threads, the sets spread so that each thread gets about as many VMs.
import type { DaemonConfig, ForwardConfig, VmConfig } from './settings.js';

export interface VmThreadPlan {
  /** For logs and the metrics' thread label: "vm 3" or "vms 3,4,7". */
  name: string;
  /** The daemon config this thread runs: its VMs, their forwards, the daemon-wide settings; no metrics (the main thread serves them). */
  config: DaemonConfig;
  /** Where each of config.forwards stands in the whole config's forwards. */
  forwardIndices: number[];
}

/** Indices of `vms` in sets that must share a loop (same group, same capture file), each set in config order, sets by first VM. */
export function vmsThatShareALoop(config: DaemonConfig): number[][] {
  const parent = config.vms.map((_, i) => i);
  const root = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]!]!;
    return i;
  };
  const firstWith = new Map<string, number>();
  const join = (key: string, i: number): void => {
    const j = firstWith.get(key);
    if (j === undefined) firstWith.set(key, i);
    else parent[root(i)] = root(j);
  };
  config.vms.forEach((vm, i) => {
    for (const g of vm.groups ?? []) join(`group ${g}`, i);
    const pcap = vm.pcapPath ?? config.pcapPath;
    if (pcap !== undefined) join(`pcap ${pcap}`, i);
  });
  const sets = new Map<number, number[]>();
  config.vms.forEach((_, i) => {
    const r = root(i);
    const s = sets.get(r);
    if (s) s.push(i);
    else sets.set(r, [i]);
  });
  return [...sets.values()].sort((a, b) => a[0]! - b[0]!);
}

/**
 * The VM threads for `config`, or null when every VM runs on the main thread (threads 0,
 * or at most one set of VMs to place: a thread of its own would only add a hop).
 */
export function planVmThreads(config: DaemonConfig): VmThreadPlan[] | null {
  const setting = config.threads ?? 0;
  const sets = vmsThatShareALoop(config);
  const count = setting === 'per-vm' ? sets.length : Math.min(setting, sets.length);
  if (count <= 1) return null;
  // Largest sets first, each into the thread with the fewest VMs so far (first such on ties).
  const bins: number[][] = Array.from({ length: count }, () => []);
  for (const set of [...sets].sort((a, b) => b.length - a.length || a[0]! - b[0]!)) {
    let k = 0;
    for (let j = 1; j < count; j++) if (bins[j]!.length < bins[k]!.length) k = j;
    bins[k]!.push(...set);
  }
  return bins
    .map((b) => b.sort((x, y) => x - y))
    .sort((a, b) => a[0]! - b[0]!)
    .map((indices) => {
      const vms: VmConfig[] = indices.map((i) => config.vms[i]!);
      const cids = new Set(vms.map((vm) => vm.guestCid));
      const forwardIndices = config.forwards.flatMap((f, i) => (cids.has(f.guestCid) ? [i] : []));
      const forwards: ForwardConfig[] = forwardIndices.map((i) => config.forwards[i]!);
      const c: DaemonConfig = { vms, forwards, threads: 0 };
      if (config.logLevel !== undefined) c.logLevel = config.logLevel;
      if (config.ring !== undefined) c.ring = config.ring;
      if (config.pcapPath !== undefined && vms.some((vm) => vm.pcapPath === undefined)) c.pcapPath = config.pcapPath;
      if (config.pcapSnaplen !== undefined) c.pcapSnaplen = config.pcapSnaplen;
      return { name: `${vms.length === 1 ? 'vm' : 'vms'} ${[...cids].join(',')}`, config: c, forwardIndices };
    });
}
