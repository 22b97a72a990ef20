// Orchestration of the whole appliance on this host: the webserver's guest program
// (guest-entry.ts) booted by startGuest() (start-guest.ts: the image, virtiofsd on the
// site folder, the vhost-user-vsock daemon in this process with TCP forwards to the
// guest's webserver and ping-pong ports, QEMU), then a first HTTP response through the
// forward. startAppliance() stops what it started when a part fails (StartError names
// the part), and returns a handle whose stop() ends everything (QEMU, daemon, virtiofsd
// by pid) and removes the socket folder. `crashed` settles if QEMU or virtiofsd ends on
// its own.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import type { RunningDaemon } from '../../drivers/virtio-vsock/daemon/daemon.js';
import type { AnyGuestImage, Machine } from '../image/guest.js';
import type { IcuData } from '../image/icu-data.js';
import type { SquashfsCompression } from '../image/squashfs.js';
import type { QemuInstance } from '../qemu/launch.js';
import type { BootTimeline } from './boot-stages.js';
import { type GuestProgram, ROOT } from './guest-image.js';
import { DEFAULT_MACHINE, DEFAULT_MEMORY_MIB, DMA_PAGES } from './machine-defaults.js';
import { StartError, type VmStateUse, checkParts, startGuest } from './start-guest.js';

/**
 * The guest's node keeps its JIT. Under TCG freshly generated machine code has to be
 * translated by QEMU too, so the first few thousand requests are slower than with
 * --jitless; once V8 has optimized the hot paths (QEMU's `info jit` shows almost no new
 * translations), the JIT wins: after a 40 s warm-up, 627 vs 338 req/s for the cached
 * 133 KB page at concurrency 1 and 1039 vs 485 at concurrency 8 (same session, one
 * after the other). A 20-request warm-up had shown the opposite, which is why this was
 * --jitless before.
 */
export const GUEST_NODE_OPTIONS: readonly string[] = [];

export { ROOT, ADDON } from './guest-image.js';
export const GUEST_BUNDLE = join(ROOT, 'dist', 'bundles', 'appliance.js');
/** The same program as one script, for the V8 startup snapshot (build.mjs). */
export const GUEST_SNAPSHOT_ENTRY = join(ROOT, 'dist', 'bundles', 'appliance.cjs');
export const DEFAULT_SITE = join(ROOT, 'appliance', 'site');
export const GUEST_WEB_PORT = 80;
export const GUEST_PINGPONG_PORT = 5000;
export const READY_MARKER = 'appliance-ready:';
export const KERNEL_DRIVER_MODULES = ['virtio_pci', 'vmw_vsock_virtio_transport', 'virtiofs'];

export { DEFAULT_MACHINE, DEFAULT_MEMORY_MIB, DMA_PAGES } from './machine-defaults.js';
export { GUEST_CID, type Part, StartError, VIRTIOFSD, describeExit } from './start-guest.js';

export interface ApplianceOptions {
  /** Host TCP port forwarded to the guest's webserver (0: any free port). */
  port: number;
  /** Host TCP port forwarded to the ping-pong service (default port + 1; 0: any). */
  pingPongPort?: number;
  site?: string;
  /** Default microvm; q35 for PCI (and for --drivers kernel: our kernel has no vsock or virtiofs driver). */
  machine?: Machine;
  /** Guest RAM (default DEFAULT_MEMORY_MIB of the machine); too little for the image is refused before the launch. */
  memoryMiB?: number;
  drivers?: 'ours' | 'kernel';
  txMode?: 'auto' | 'two-copy' | 'single-copy' | 'zero-copy';
  /**
   * Ring layout of our drivers (default: split, QEMU's default for its devices): packed
   * gives the vhost-user devices packed=on and makes our drivers insist on it; the
   * virtio-fs rings stay split (virtiofsd 7.2 offers no packed layout).
   */
  ring?: 'split' | 'packed';
  /** Progress lines ("building image…"). */
  progress?: (line: string) => void;
  /** Daemon log lines (default: dropped). */
  daemonLog?: (line: string) => void;
  /** Copy the guest console to stderr. */
  echoConsole?: boolean;
  /** How long the guest may take to answer (default 5 min: TCG on a loaded machine). */
  bootTimeoutMs?: number;
  /** Extra flags for the guest program. */
  guestArgs?: string[];
  /** Options for the guest's node (default GUEST_NODE_OPTIONS). */
  nodeOptions?: string[];
  /** Guest vCPUs (default 1). */
  cpus?: number;
  /** Start the guest program from a V8 startup snapshot (default true). */
  snapshot?: boolean;
  /**
   * microvm with our drivers: come up from a saved VM state (vm-snapshot.ts; default
   * true): the first start saves it, later ones restore it. false: a cold boot every time.
   */
  vmSnapshot?: boolean;
  /** microvm: root file system compression (default lz4). */
  compression?: SquashfsCompression;
  /** microvm: node's ICU data: en (default: English only, a smaller image) or full (every locale). */
  icu?: IcuData;
  /** The page fetched to tell that the webserver answers (default "/"). */
  readinessPath?: string;
  /** Called with each boot stage as it is seen (the timeline so far). */
  onStage?: (point: string, timeline: BootTimeline) => void;
}

export interface RunningAppliance {
  readonly url: string;
  readonly webPort: number;
  readonly pingPongPort: number;
  readonly qemuPid: number;
  readonly virtiofsdPid: number;
  readonly socketDir: string;
  readonly hybridSocket: string;
  readonly qemu: QemuInstance;
  readonly daemon: RunningDaemon;
  /** Settles (never rejects) with a reason when QEMU or virtiofsd ended without stop(). */
  readonly crashed: Promise<string>;
  readonly bootMs: number;
  readonly imageMs: number;
  readonly machine: Machine;
  readonly memoryMiB: number;
  readonly image: AnyGuestImage;
  /** Launch to first response, stage by stage. */
  readonly timeline: BootTimeline;
  /** Whether this start saved the VM state or restored it (null: a cold boot without one). */
  readonly vmState: VmStateUse | null;
  stop(): Promise<void>;
}

const since = (t0: number): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

/** GET / through the forward; resolves with the status code, or rejects. */
export function httpStatus(port: number, path = '/', timeoutMs = 30_000): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolvePromise(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

export async function startAppliance(opts: ApplianceOptions): Promise<RunningAppliance> {
  const progress = opts.progress ?? (() => {});
  const drivers = opts.drivers ?? 'ours';
  const site = resolve(opts.site ?? DEFAULT_SITE);
  const machine = opts.machine ?? DEFAULT_MACHINE;
  const memoryMiB = opts.memoryMiB ?? DEFAULT_MEMORY_MIB[machine];
  const useSnapshot = opts.snapshot ?? true;
  if (machine === 'microvm' && drivers === 'kernel') {
    throw new StartError('image', 'the Linux kernel drivers (--drivers kernel) run on the q35 machine only: our microvm kernel has no vsock or virtiofs driver (add --machine q35)');
  }

  const dmaPages = drivers === 'kernel' ? 1 : DMA_PAGES[machine];
  const guestArgs = [`--drivers=${drivers}`, `--port=${GUEST_WEB_PORT}`, `--pingpong-port=${GUEST_PINGPONG_PORT}`, '--tag=site'];
  if (drivers === 'ours') guestArgs.push(`--dma-pages=${dmaPages}`);
  if (drivers === 'ours' && opts.txMode) guestArgs.push(`--tx-mode=${opts.txMode}`);
  if (drivers === 'ours' && opts.ring) guestArgs.push(`--ring=${opts.ring}`);
  guestArgs.push(...(opts.guestArgs ?? []));
  const program: GuestProgram = {
    name: drivers === 'kernel' ? 'appliance-kernel' : 'appliance',
    bundle: GUEST_BUNDLE,
    ...(useSnapshot ? { snapshotEntry: GUEST_SNAPSHOT_ENTRY, snapshotName: 'appliance' } : {}),
    args: guestArgs,
    hugepages: drivers === 'kernel' ? 2 : dmaPages,
    modules: drivers === 'kernel' ? KERNEL_DRIVER_MODULES : [],
    nodeOptions: opts.nodeOptions ?? [...GUEST_NODE_OPTIONS],
  };
  const shares = [{ dir: site, tag: 'site' }];
  // Checks that need nothing started (the site folder is the part "site" here).
  checkParts({ program, shares }, 'site');

  const guest = await startGuest({
    program,
    machine,
    memoryMiB,
    shares,
    forwards: [
      { host: '127.0.0.1', port: opts.port, guestPort: GUEST_WEB_PORT },
      { host: '127.0.0.1', port: opts.pingPongPort ?? (opts.port === 0 ? 0 : opts.port + 1), guestPort: GUEST_PINGPONG_PORT },
    ],
    readyLine: READY_MARKER,
    bootTimeoutMs: opts.bootTimeoutMs ?? 5 * 60_000,
    ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
    packedRings: opts.ring === 'packed',
    ...(opts.compression ? { compression: opts.compression } : {}),
    ...(opts.icu ? { icu: opts.icu } : {}),
    echoConsole: opts.echoConsole ? '[guest] ' : false,
    progress,
    ...(opts.daemonLog ? { daemonLog: opts.daemonLog } : {}),
    ...(opts.onStage ? { onStage: opts.onStage } : {}),
    vmSnapshot: machine === 'microvm' && drivers === 'ours' && (opts.vmSnapshot ?? true),
    portInUse: () => `cannot listen on 127.0.0.1:${opts.port} or the next port: already in use (pick another with --port)`,
  });
  try {
    const tBoot = guest.launchedAt;
    const [webPort, pingPongPort] = guest.forwardPorts as [number, number];
    const { qemu, timeline } = guest;
    progress(`guest listening (${since(tBoot)} after launch)`);
    // The webserver answers through the forward.
    for (let attempt = 1; ; attempt++) {
      try {
        const status = await httpStatus(webPort, opts.readinessPath ?? '/');
        if (status === 200 || status === 404) {
          timeline.markHost('first-response');
          opts.onStage?.('first-response', timeline);
          break;
        }
        throw new Error(`GET / answered ${status}`);
      } catch (e) {
        if (attempt >= 5 || !qemu.running) throw new StartError('guest', `the webserver does not answer through 127.0.0.1:${webPort}: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const bootMs = performance.now() - tBoot;
    progress(`webserver answers (${since(tBoot)} after launch)`);

    return {
      url: `http://127.0.0.1:${webPort}/`,
      webPort,
      pingPongPort,
      qemuPid: qemu.pid,
      virtiofsdPid: guest.virtiofsdPids[0]!,
      socketDir: guest.socketDir,
      hybridSocket: guest.hybridSocket,
      qemu,
      daemon: guest.daemon,
      crashed: guest.crashed,
      bootMs,
      imageMs: guest.imageMs,
      machine,
      memoryMiB,
      image: guest.image,
      timeline,
      vmState: guest.vmState,
      stop: guest.stop,
    };
  } catch (e) {
    await guest.stop();
    throw e;
  }
}

/** Socket files left in a folder (for the shutdown check). */
export function socketFilesIn(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => statSync(join(dir, n)).isSocket());
}
