// Command line of `npm run bench -- scale`.
import { threadsSetting } from '../../drivers/virtio-vsock/daemon/settings.js';
import { BenchUsageError } from '../usage.js';
import { type DaemonCpusSetting, allowedCpus, parseDaemonCpus, planCpuSplit } from './cpu-split.js';

export interface ScaleArgs {
  vms: number;
  conns: number;
  /** Load processes for the VMs (the ping-pong VM has one more of its own). */
  workers: number;
  /** Paced connections: bytes per second per direction, written once this many are due. */
  rate: number;
  chunk: number;
  rounds: number;
  busySeconds: number;
  quietSeconds: number;
  churnSeconds: number;
  churnEveryMs: number;
  badSeconds: number;
  pingSize: number;
  ring: 'auto' | 'split' | 'packed';
  /** Results file name under bench/results (without .json). */
  out: string;
  /** VMs flooding (default 1; 0: every VM paced). */
  floodVms: number;
  /** Repository whose daemon is run (default this one): a copy built before a change, for before/after runs. */
  daemonRoot: string | null;
  /** Extra node flags for the daemon (e.g. --cpu-prof). */
  daemonNodeArgs: string[];
  /** nice(1) value of the daemon and of the ping-pong's process (default 0). */
  daemonNice: number;
  /**
   * SCHED_RR priority (chrt(1), 1..99) of the daemon and of the ping-pong's process
   * (default 0: the normal policy). Needs root (CAP_SYS_NICE).
   */
  daemonRt: number;
  /** Show the daemon's stdout (with --daemon-node-args "--trace-gc"). */
  daemonStdout: boolean;
  /** The daemon's --threads (default: not given, the daemon's own default, 0). */
  daemonThreads: string | null;
  /**
   * CPUs of the daemon and the ping-pong's process; the load processes get the others
   * (cpu-split.ts). auto: the first CPU, when there are two or more; shared: no pinning.
   */
  daemonCpus: DaemonCpusSetting;
}

export const SCALE_USAGE = `usage: npm run bench -- scale [--vms N] [--conns M] [--workers W] [--rate BYTES_PER_S] [--chunk BYTES]
       [--rounds R] [--busy-seconds S] [--quiet-seconds S] [--churn-seconds S] [--churn-every-ms MS]
       [--bad-seconds S] [--ping-size BYTES] [--ring auto|split|packed] [--flood-vms K] [--out NAME]
       [--daemon-root DIR] [--daemon-node-args "ARGS"] [--daemon-nice N] [--daemon-rt PRIO]
       [--daemon-stdout] [--daemon-threads per-vm|N] [--daemon-cpus auto|shared|LIST]
N simulated VMs (default 64) with M connections each (default 100) on one vhost-user-vsock
daemon; VM 1 floods, the others send --rate bytes/s each way per connection. A 65th VM
carries the ping-pong. Writes bench/results/NAME.json (default scale). --daemon-root runs
the daemon of another checkout (built), for before/after comparisons in the same conditions.
--daemon-threads passes --threads to the daemon (N worker threads, or per-vm).
--daemon-nice N and --daemon-rt PRIO run the daemon and the ping-pong's process at a higher
priority: nice(1) N, or the real-time round-robin policy at PRIO (chrt -r; needs root).
--daemon-cpus LIST pins the daemon and the ping-pong's process to LIST (taskset -c syntax)
and the load processes to the other CPUs, as each VM would have CPUs of its own; auto (the
default) gives the daemon the first CPU when there are two or more; shared pins nothing.`;

const DEFAULTS: ScaleArgs = {
  vms: 64,
  conns: 100,
  workers: 2,
  rate: 512,
  chunk: 512,
  rounds: 3,
  busySeconds: 10,
  quietSeconds: 5,
  churnSeconds: 10,
  churnEveryMs: 1000,
  badSeconds: 10,
  pingSize: 64,
  ring: 'auto',
  out: 'scale',
  floodVms: 1,
  daemonRoot: null,
  daemonNodeArgs: [],
  daemonNice: 0,
  daemonRt: 0,
  daemonStdout: false,
  daemonThreads: null,
  daemonCpus: 'auto',
};

/** The flags besides the numeric ones that take a value. */
const VALUE_FLAGS = ['--ring', '--daemon-root', '--daemon-nice', '--daemon-rt', '--daemon-node-args', '--daemon-threads', '--daemon-cpus', '--out'];

/** `allowed`: the CPUs the bench may use (default: this process's affinity). */
export function parseScaleArgs(argv: readonly string[], allowed: readonly number[] = allowedCpus()): ScaleArgs {
  const a: ScaleArgs = { ...DEFAULTS };
  const numbers: Record<string, keyof ScaleArgs> = {
    '--vms': 'vms',
    '--conns': 'conns',
    '--workers': 'workers',
    '--rate': 'rate',
    '--chunk': 'chunk',
    '--rounds': 'rounds',
    '--busy-seconds': 'busySeconds',
    '--quiet-seconds': 'quietSeconds',
    '--churn-seconds': 'churnSeconds',
    '--churn-every-ms': 'churnEveryMs',
    '--bad-seconds': 'badSeconds',
    '--ping-size': 'pingSize',
    '--flood-vms': 'floodVms',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === '--daemon-stdout') {
      a.daemonStdout = true;
      continue;
    }
    const key = numbers[flag];
    if (key === undefined && !VALUE_FLAGS.includes(flag)) throw new BenchUsageError(`unknown flag ${flag} (see --help)`);
    const value = argv[++i];
    if (value === undefined) throw new BenchUsageError(`${flag}: missing value`);
    if (key !== undefined) {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) throw new BenchUsageError(`${flag}: ${JSON.stringify(value)} is not a number >= 0`);
      (a as unknown as Record<string, number>)[key] = n;
    } else if (flag === '--ring') {
      if (value !== 'auto' && value !== 'split' && value !== 'packed') throw new BenchUsageError(`--ring: auto, split or packed, not ${JSON.stringify(value)}`);
      a.ring = value;
    } else if (flag === '--daemon-root') {
      a.daemonRoot = value;
    } else if (flag === '--daemon-nice') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < -20 || n > 19) throw new BenchUsageError(`--daemon-nice: -20..19, not ${JSON.stringify(value)}`);
      a.daemonNice = n;
    } else if (flag === '--daemon-rt') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1 || n > 99) throw new BenchUsageError(`--daemon-rt: a SCHED_RR priority 1..99, not ${JSON.stringify(value)}`);
      a.daemonRt = n;
    } else if (flag === '--daemon-node-args') {
      a.daemonNodeArgs = value.split(' ').filter((x) => x !== '');
    } else if (flag === '--daemon-threads') {
      try {
        threadsSetting(value, '--daemon-threads');
      } catch (e) {
        throw new BenchUsageError((e as Error).message);
      }
      a.daemonThreads = value;
    } else if (flag === '--daemon-cpus') {
      a.daemonCpus = parseDaemonCpus(value);
    } else if (flag === '--out') {
      if (!/^[\w.-]+$/.test(value)) throw new BenchUsageError(`--out: a file name, not ${JSON.stringify(value)}`);
      a.out = value;
    } else {
      throw new BenchUsageError(`unknown flag ${flag} (see --help)`);
    }
  }
  if (a.vms < 8) throw new BenchUsageError('--vms: at least 8 (a flooding VM, 4 misbehaving ones, churned ones and quiet ones)');
  if (a.workers < 1) throw new BenchUsageError('--workers: at least 1');
  // Refused here, before anything runs, if the list cannot be had on this machine.
  planCpuSplit(a.daemonCpus, allowed);
  if (a.daemonRt !== 0 && a.daemonNice !== 0) throw new BenchUsageError('--daemon-rt and --daemon-nice: one or the other (a real-time policy has no niceness)');
  return a;
}
