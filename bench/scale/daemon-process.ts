// The daemon under test as its own process, started as a user starts it (the
// vhost-user-vsock launcher with flags), watched from outside: CPU time, memory and open
// fds from /proc, counters from its /metrics.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatCpuList } from './cpu-split.js';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const DAEMON_LAUNCHER = 'drivers/virtio-vsock/daemon/vhost-user-vsock.mjs';
const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

export interface ProcSample {
  /** User + system CPU seconds since the process started. */
  cpuSeconds: number;
  /** Resident memory: all, private (anonymous), mapped files, shared memory (guest RAM the daemon touched). */
  rssBytes: number;
  rssAnonBytes: number;
  rssFileBytes: number;
  rssShmemBytes: number;
  fds: number;
  /**
   * Time the main thread (the event loop) was runnable but waiting for a CPU, and the
   * times it was given one (/proc/PID/schedstat): on a machine with more runnable work
   * than cores, this is latency the daemon cannot do anything about.
   */
  runQueueWaitSeconds: number;
  timeslices: number;
  /** performance.now() of the sample. */
  at: number;
}

/** CPU, memory and fds of process `pid` now. */
export function sampleProcess(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND; // utime, stime (fields 14, 15)
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return {
    cpuSeconds,
    rssBytes: kb('VmRSS'),
    rssAnonBytes: kb('RssAnon'),
    rssFileBytes: kb('RssFile'),
    rssShmemBytes: kb('RssShmem'),
    fds: readdirSync(`/proc/${pid}/fd`).length,
    ...schedStat(pid),
    at: performance.now(),
  };
}

function schedStat(pid: number): { runQueueWaitSeconds: number; timeslices: number } {
  const [, wait, slices] = readFileSync(`/proc/${pid}/schedstat`, 'latin1').trim().split(' ').map(Number);
  return { runQueueWaitSeconds: wait! / 1e9, timeslices: slices! };
}

/** One scrape of /metrics: sample name with labels -> value. */
export type Metrics = Map<string, number>;

export function scrapeMetrics(url: string): Promise<Metrics> {
  return new Promise((resolve, reject) => {
    // No keep-alive: a connection left open would count among the daemon's fds.
    get(url, { agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve(parseExposition(text)));
    }).on('error', reject);
  });
}

export function parseExposition(text: string): Metrics {
  const m: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}

/** The sum of every sample of `name` whose labels include all of `labels` (as written: key="value"). */
export function metricSum(m: Metrics, name: string, ...labels: string[]): number {
  let n = 0;
  for (const [k, v] of m) {
    const brace = k.indexOf('{');
    const base = brace < 0 ? k : k.slice(0, brace);
    if (base !== name) continue;
    if (labels.every((l) => k.includes(l))) n += v;
  }
  return n;
}

export interface DaemonProcess {
  child: ChildProcess;
  pid: number;
  metricsUrl: string;
  /** The last lines it wrote (for errors). */
  tail(): string;
  stop(): Promise<void>;
}

export interface DaemonProcessOptions {
  /** The checkout whose (built) daemon runs; default this one. */
  root?: string | null;
  /** Flags for node itself (--cpu-prof...). */
  nodeArgs?: readonly string[];
  /** Pass the daemon's stdout through (what node flags such as --trace-gc print); default: dropped. */
  showStdout?: boolean;
  /** Scheduling niceness (nice(1)); negative: the daemon goes before other work on a busy machine, as a system service may be set up. */
  nice?: number;
  /** SCHED_RR priority (chrt -r, 1..99; needs root); 0 or absent: the normal policy. */
  rtPriority?: number;
  /** The CPUs it may run on (taskset -c); absent: any. */
  cpus?: readonly number[];
}

/** Puts every thread of running process `pid` under SCHED_RR at `priority` (chrt -a -r -p). */
export function setRealtimePriority(pid: number, priority: number): void {
  const r = spawnSync('chrt', ['-a', '-r', '-p', String(priority), String(pid)], { encoding: 'utf8' });
  if (r.error) throw new Error(`chrt: ${r.error.message} (chrt is in util-linux)`);
  if (r.status !== 0) throw new Error(`chrt -r ${priority} for pid ${pid} failed: ${r.stderr.trim()} (the real-time policy needs root or CAP_SYS_NICE)`);
}

/** Starts the daemon with `args` (plus --metrics on a free port) and waits until it runs. */
export function startDaemonProcess(args: readonly string[], opts: DaemonProcessOptions = {}): Promise<DaemonProcess> {
  const bin = join(opts.root ?? REPO_ROOT, DAEMON_LAUNCHER);
  const argv = [...(opts.nodeArgs ?? []), bin, ...args, '--metrics', '127.0.0.1:0'];
  // taskset, nice and chrt exec what follows them: the pid stays the daemon's.
  const command = [
    ...(opts.cpus ? ['taskset', '-c', formatCpuList(opts.cpus)] : []),
    ...(opts.rtPriority ? ['chrt', '-r', String(opts.rtPriority)] : opts.nice ? ['nice', '-n', String(opts.nice)] : []),
    process.execPath,
    ...argv,
  ];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', opts.showStdout ? 'inherit' : 'ignore', 'pipe'] });
  let log = '';
  const keep = (d: Buffer): void => {
    log = (log + d.toString()).slice(-20000);
  };
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => {
      clearInterval(poll);
      reject(new Error(`vhost-user-vsock exited (${code}) before it ran: ${log}`));
    };
    child.once('exit', onExit);
    const poll = setInterval(() => {
      // Needs the info lines "metrics at URL" and "running".
      const url = /metrics at (http:\/\/\S+)/.exec(log)?.[1];
      if (url === undefined || !log.includes('running')) return;
      clearInterval(poll);
      child.off('exit', onExit);
      resolve({
        child,
        pid: child.pid!,
        metricsUrl: url,
        tail: () => log.slice(-4000),
        stop: async () => {
          if (child.exitCode === null) child.kill('SIGTERM');
          await exited;
        },
      });
    }, 20);
  });
}
