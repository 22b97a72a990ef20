// Which CPUs the scale bench's processes run on. The simulated guests are JavaScript
// drivers in the load processes; on a real host each VM runs on vCPU threads of its own,
// not on the daemon's CPU. Left on the same CPUs as the daemon, the load processes take
// the CPU from it and the quiet VM's round trip measures the scheduler (measured:
// bench/scale/README.md). So by default the daemon and the ping-pong's process get one
// CPU and the load processes and the coordinator the others, the way a vhost-user
// back end is deployed on a core of its own (taskset, systemd's CPUAffinity=).
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { BenchUsageError } from '../usage.js';

/** `auto` (the default), `shared` (no pinning) or the daemon's CPUs. */
export type DaemonCpusSetting = 'auto' | 'shared' | number[];

export interface CpuSplit {
  /** The daemon and the ping-pong's process. */
  daemon: number[];
  /** The load processes and the coordinator. */
  load: number[];
}

/** Parses a CPU list as taskset(1) and sysfs write it: `0`, `0,2`, `1-3,6`. */
export function parseCpuList(text: string, what: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new BenchUsageError(`${what}: ${JSON.stringify(part)} in ${JSON.stringify(text)} is not a CPU number or range (e.g. 0 or 0,2-3)`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) throw new BenchUsageError(`${what}: range ${JSON.stringify(part)} ends before it starts`);
    if (to > 4095) throw new BenchUsageError(`${what}: CPU ${to} is beyond 4095`);
    for (let c = from; c <= to; c++) cpus.add(c);
  }
  return [...cpus].sort((x, y) => x - y);
}

/** The same list written short: [0, 1, 2, 5] -> "0-2,5". */
export function formatCpuList(cpus: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    parts.push(j === i ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** The CPUs this process may run on (/proc/self/status, Cpus_allowed_list). */
export function allowedCpus(status = readFileSync('/proc/self/status', 'latin1')): number[] {
  const line = /^Cpus_allowed_list:\s*(\S+)/m.exec(status);
  if (!line) throw new Error('/proc/self/status has no Cpus_allowed_list line');
  return parseCpuList(line[1]!, 'Cpus_allowed_list');
}

/** Parses --daemon-cpus: auto, shared or a CPU list. */
export function parseDaemonCpus(value: string): DaemonCpusSetting {
  if (value === 'auto' || value === 'shared') return value;
  return parseCpuList(value, '--daemon-cpus');
}

/**
 * The split for `setting` on a process allowed `allowed`; null when nothing is pinned
 * (`shared`, or `auto` with a single CPU). An explicit list must be allowed CPUs and leave
 * at least one for the load.
 */
export function planCpuSplit(setting: DaemonCpusSetting, allowed: readonly number[]): CpuSplit | null {
  if (setting === 'shared') return null;
  if (setting === 'auto') return allowed.length >= 2 ? { daemon: [allowed[0]!], load: allowed.slice(1) } : null;
  const outside = setting.filter((c) => !allowed.includes(c));
  if (outside.length > 0) throw new BenchUsageError(`--daemon-cpus: CPU ${formatCpuList(outside)} is not one this process may use (${formatCpuList(allowed)})`);
  const load = allowed.filter((c) => !setting.includes(c));
  if (load.length === 0) throw new BenchUsageError(`--daemon-cpus: ${formatCpuList(setting)} leaves no CPU for the load processes (allowed: ${formatCpuList(allowed)}); use --daemon-cpus shared to run everything everywhere`);
  return { daemon: [...setting], load };
}

/** Pins every thread of running process `pid` to `cpus` (taskset -a -p -c). */
export function pinProcess(pid: number, cpus: readonly number[]): void {
  const list = formatCpuList(cpus);
  const failed = `taskset -c ${list} for pid ${pid} failed`;
  const r = spawnSync('taskset', ['-a', '-p', '-c', list, String(pid)], { encoding: 'utf8' });
  if (r.error) throw new Error(`taskset: ${r.error.message} (taskset is in util-linux)`);
  if (r.status !== 0) throw new Error(`${failed}: ${r.stderr.trim()}`);
  // taskset -a says nothing and exits 0 for a pid that is gone: check what took.
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch (e) {
    throw new Error(`${failed}: the process is gone (${(e as NodeJS.ErrnoException).code})`);
  }
  const now = formatCpuList(allowedCpus(status));
  if (now !== list) throw new Error(`${failed}: it runs on ${now}`);
}
