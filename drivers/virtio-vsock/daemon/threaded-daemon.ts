// The daemon with its VMs on threads of their own (--threads N|per-vm; vm-threads.ts
// decides who shares a thread). One event loop carries at most one CPU; VM threads let
// the daemon use more (vhost-device-vsock runs a thread per VM), and a busy VM delays
// only the VMs of its own thread. Measured on a 2-core machine (npm run bench -- scale
// --daemon-threads), they did not lower a quiet VM's latency under a flood there and
// cost about 12 MB each, so the default stays 0: every VM on the main thread.
//
// The main thread starts the VM threads (vm-thread.ts), writes their log lines, serves
// /metrics from their figures, and stops them. A VM thread that dies unasked fails the
// whole daemon (`failed`), as an exception would without threads: its VMs' sockets would
// otherwise stay open with nobody serving them.
import { Worker } from 'node:worker_threads';
import { type DaemonDeps, type RunningDaemon, startDaemon } from './daemon.js';
import { type DaemonLogger, createLogger } from './logger.js';
import { type CaptureMetricsSource, type LoopFigures, type VmMetricsSource, loopFigures, renderMetrics } from './metrics.js';
import { type DaemonMetricsEndpoint, type MetricsServer, serveDaemonMetrics } from './metrics-server.js';
import type { DaemonConfig } from './settings.js';
import type { BoundAddress, FromVmThread, MetricsReply, ToVmThread, VmThreadData } from './vm-thread-protocol.js';
import { type VmThreadPlan, planVmThreads } from './vm-threads.js';

const VM_THREAD_MODULE = new URL('./vm-thread.js', import.meta.url);
/** How long a VM thread may take to close its VMs before it is terminated. */
const CLOSE_TIMEOUT_MS = 10_000;
/** How long /metrics waits for a VM thread's figures. */
const METRICS_TIMEOUT_MS = 5_000;

/** What the command line needs of a running daemon, whichever threads it runs on. */
export interface DaemonHandle {
  readonly logger: DaemonLogger;
  /** Settles with the reason when a VM thread died unasked (the daemon should then stop); never for VMs on the main thread. */
  readonly failed: Promise<Error>;
  close(): Promise<void>;
}

export interface ThreadedDaemonDeps extends DaemonDeps {
  /** The VM threads' entry module (default vm-thread.js); tests pass one that misbehaves. */
  vmThreadModule?: URL;
}

export interface ThreadedDaemon extends DaemonHandle {
  /** The VM threads: their names and CIDs. */
  readonly threads: ReadonlyArray<{ name: string; cids: readonly number[] }>;
  /** The TCP forwards' bound addresses, in config order. */
  readonly forwards: ReadonlyArray<{ guestCid: number; address: string; port: number }>;
  readonly metrics: MetricsServer | null;
}

class VmThread {
  readonly worker: Worker;
  readonly cids: number[];
  readonly ready: Promise<BoundAddress[]>;
  readonly #pending = new Map<number, (m: MetricsReply) => void>();
  #nextId = 1;
  #closing = false;
  readonly #exited: Promise<void>;
  /** Set when the thread fails after it was up. */
  onFailure: (err: Error) => void = () => {};

  constructor(
    readonly plan: VmThreadPlan,
    data: Omit<VmThreadData, 'name' | 'config'>,
    onLog: (line: string) => void,
    onFrontEnd: DaemonDeps['onFrontEnd'],
    module: URL,
  ) {
    this.cids = plan.config.vms.map((vm) => vm.guestCid);
    const workerData: VmThreadData = { ...data, name: plan.name, config: plan.config };
    this.worker = new Worker(module, { workerData });
    this.#exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    let up = false;
    this.ready = new Promise((resolve, reject) => {
      const fail = (err: Error): void => {
        if (!up) reject(err);
        else if (!this.#closing) this.onFailure(err);
      };
      this.worker.on('message', (m: FromVmThread) => {
        if (m.type === 'log') onLog(m.line);
        else if (m.type === 'ready') {
          up = true;
          resolve(m.forwards);
        } else if (m.type === 'failed') reject(Object.assign(new Error(m.message), { code: m.code ?? 'ERR_VSOCK_VM_THREAD' }));
        else if (m.type === 'metrics') {
          this.#pending.get(m.id)?.(m);
          this.#pending.delete(m.id);
        } else if (m.type === 'front-end') onFrontEnd?.(m.cid, m.event);
      });
      this.worker.on('error', (err) => fail(Object.assign(new Error(`VM thread (${plan.name}) failed: ${err.stack ?? err.message}`), { code: 'ERR_VSOCK_VM_THREAD' })));
      this.worker.on('exit', (code) => fail(Object.assign(new Error(`VM thread (${plan.name}) exited (status ${code})`), { code: 'ERR_VSOCK_VM_THREAD' })));
    });
    this.ready.catch(() => {}); // awaited by the starter; a late rejection is not unhandled
  }

  #send(m: ToVmThread): void {
    this.worker.postMessage(m);
  }

  /** This thread's VMs, capture files and loop now. */
  metrics(): Promise<MetricsReply> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`VM thread (${this.plan.name}) did not send its metrics within ${METRICS_TIMEOUT_MS} ms`));
      }, METRICS_TIMEOUT_MS);
      this.#pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.#send({ op: 'metrics', id });
    });
  }

  /** Closes its VMs (vhost-user servers, host ends, captures) and ends the thread; terminated if that takes too long. */
  async close(): Promise<void> {
    this.#closing = true;
    this.#send({ op: 'close' });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), CLOSE_TIMEOUT_MS)));
    if ((await Promise.race([this.#exited, late])) === 'late') await this.worker.terminate();
    clearTimeout(timer);
  }
}

/** Starts the VM threads of `plans` (planVmThreads) and, in this thread, the metrics server. */
export async function startThreadedDaemon(config: DaemonConfig, plans: readonly VmThreadPlan[], deps: ThreadedDaemonDeps = {}): Promise<ThreadedDaemon> {
  if (deps.createVhostUserServer || deps.pcapFileOps) throw new Error('startThreadedDaemon: injected vhost-user servers and capture file operations work on the main thread only (startDaemon)');
  const sink = deps.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const logger = createLogger(config.logLevel ?? 'info', sink);
  for (const n of config.notices ?? []) logger.log('warn', null, n);
  const threads = plans.map((p) => new VmThread(p, { sampleLoop: config.metrics !== undefined, frontEndEvents: deps.onFrontEnd !== undefined }, sink, deps.onFrontEnd, deps.vmThreadModule ?? VM_THREAD_MODULE));
  const stopAll = (): Promise<void> => Promise.all(threads.map((t) => t.close())).then(() => {});
  const forwards: Array<{ guestCid: number } & BoundAddress> = [];
  try {
    const up = await Promise.allSettled(threads.map((t) => t.ready));
    const failure = up.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    // Back in config order: each thread's forwards are in the order of its plan.
    up.forEach((r, k) => (r as PromiseFulfilledResult<BoundAddress[]>).value.forEach((a, j) => {
      const i = plans[k]!.forwardIndices[j]!;
      forwards[i] = { guestCid: config.forwards[i]!.guestCid, ...a };
    }));
  } catch (e) {
    await stopAll();
    throw e;
  }
  logger.log('info', null, `${threads.length} VM threads: ${threads.map((t) => t.plan.name).join('; ')}`);

  let failed!: (err: Error) => void;
  const failedPromise = new Promise<Error>((r) => (failed = r));
  for (const t of threads) t.onFailure = failed;

  const vmOrder = new Map(config.vms.map((vm, i) => [vm.guestCid, i]));
  let endpoint: DaemonMetricsEndpoint | null = null;
  const render = async (): Promise<string> => {
    const parts = await Promise.all(threads.map((t) => t.metrics()));
    const vms: VmMetricsSource[] = parts.flatMap((p) => p.vms).sort((a, b) => vmOrder.get(a.cid)! - vmOrder.get(b.cid)!);
    const captures: CaptureMetricsSource[] = parts.flatMap((p) => p.captures);
    const loops: LoopFigures[] = [loopFigures('main', endpoint?.loopDelay ?? null), ...parts.map((p) => p.loop)];
    return renderMetrics(vms, captures, endpoint?.server.stats ?? null, loops);
  };
  if (config.metrics) {
    try {
      endpoint = await serveDaemonMetrics(config.metrics, render, logger);
    } catch (e) {
      await stopAll();
      throw e;
    }
  }
  const served = endpoint;
  return {
    logger,
    failed: failedPromise,
    threads: threads.map((t) => ({ name: t.plan.name, cids: t.cids })),
    forwards,
    metrics: served?.server ?? null,
    close: async () => {
      await served?.close();
      await stopAll();
    },
  };
}

/** The daemon as `config.threads` asks: VM threads (planVmThreads), or every VM on this thread (startDaemon, also whenever deps inject what cannot cross threads). */
export async function startDaemonAsConfigured(config: DaemonConfig, deps: DaemonDeps = {}): Promise<DaemonHandle> {
  const plans = deps.createVhostUserServer || deps.pcapFileOps ? null : planVmThreads(config);
  if (plans) return startThreadedDaemon(config, plans, deps);
  const d: RunningDaemon = await startDaemon(config, deps);
  return { logger: d.logger, failed: new Promise<Error>(() => {}), close: () => d.close() };
}
