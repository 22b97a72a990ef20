// Orchestration of the whole appliance on this host: the guest image (node guest with
// the appliance bundle), virtiofsd on the site folder, the vhost-user-vsock daemon (in
// this process) with TCP forwards to the guest's webserver and ping-pong ports, and
// QEMU. startAppliance() starts the parts in order, stops what it started when a part
// fails (StartError names the part), and returns a handle whose stop() ends everything
// (QEMU, daemon, virtiofsd by pid) and removes the socket folder. `crashed` settles if
// QEMU or virtiofsd ends on its own.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon, type RunningDaemon } from '../../drivers/virtio-vsock/daemon/daemon.js';
import { bootOptions, type AnyGuestImage, type Machine } from '../image/guest.js';
import { buildNodeGuest } from '../image/node-guest.js';
import { buildStartupSnapshot } from '../image/snapshot.js';
import type { SquashfsCompression } from '../image/squashfs.js';
import { type QemuExit, type QemuInstance, findQemu, launchQemu } from '../qemu/launch.js';
import { BootTimeline } from './boot-stages.js';
import { memoryNeed, type MemoryNeed, outOfMemoryIn } from './guest-memory.js';
import { DEFAULT_MACHINE, DEFAULT_MEMORY_MIB, DMA_PAGES } from './machine-defaults.js';

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

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const GUEST_BUNDLE = join(ROOT, 'dist', 'bundles', 'appliance.js');
/** The same program as one script, for the V8 startup snapshot (build.mjs). */
export const GUEST_SNAPSHOT_ENTRY = join(ROOT, 'dist', 'bundles', 'appliance.cjs');
export const ADDON = join(ROOT, 'build', 'Release', 'tsvirtio.node');
export const VIRTIOFSD = process.env['TSVIRTIO_VIRTIOFSD'] ?? '/usr/lib/qemu/virtiofsd';
export const DEFAULT_SITE = join(ROOT, 'appliance', 'site');
export const GUEST_CID = 3;
export const GUEST_WEB_PORT = 80;
export const GUEST_PINGPONG_PORT = 5000;
export const READY_MARKER = 'appliance-ready:';
export const KERNEL_DRIVER_MODULES = ['virtio_pci', 'vmw_vsock_virtio_transport', 'virtiofs'];

export { DEFAULT_MACHINE, DEFAULT_MEMORY_MIB, DMA_PAGES } from './machine-defaults.js';

export type Part = 'site' | 'image' | 'virtiofsd' | 'daemon' | 'qemu' | 'guest';

export class StartError extends Error {
  constructor(
    readonly part: Part,
    message: string,
  ) {
    super(`${part}: ${message}`);
    this.name = 'StartError';
  }
}

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
  /** microvm: root file system compression (default lz4). */
  compression?: SquashfsCompression;
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
  stop(): Promise<void>;
}

const since = (t0: number): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

function waitForSocket(path: string, child: ChildProcess, stderr: () => string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const onExit = (code: number | null, signal: string | null): void => {
      clearInterval(poll);
      reject(new StartError('virtiofsd', `exited (${code ?? signal}) before creating its socket: ${stderr().trim() || '(no output)'}`));
    };
    const poll = setInterval(() => {
      if (existsSync(path)) {
        clearInterval(poll);
        child.off('exit', onExit);
        resolvePromise();
      }
    }, 20);
    child.once('exit', onExit);
  });
}

async function killChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

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

/** Why a guest ended, for messages: out of memory (with what it needs), a kernel panic, the program's status, or QEMU's. */
export function describeExit(e: QemuExit, consoleTail: string, fullConsole = '', memory?: { memoryMiB: number; need: MemoryNeed }): string {
  const oom = outOfMemoryIn(fullConsole);
  if (oom !== null && memory) {
    return `the guest ran out of memory (${oom}) with ${memory.memoryMiB} MiB: this image needs about ${memory.need.mib} MiB (${memory.need.breakdown}); give it more with --memory; last console lines:\n${consoleTail}`;
  }
  if (e.kernelPanic) return `the guest kernel panicked; last console lines:\n${consoleTail}`;
  if (e.guestStatus !== null) return `the guest program exited with status ${e.guestStatus}; last console lines:\n${consoleTail}`;
  return `QEMU exited (code ${e.qemuCode}, signal ${e.signal})${e.stderr.trim() ? `: ${e.stderr.trim()}` : ''}; last console lines:\n${consoleTail}`;
}

const tail = (text: string, lines = 15): string => text.trimEnd().split('\n').slice(-lines).join('\n');

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
  const bootTimeoutMs = opts.bootTimeoutMs ?? 5 * 60_000;

  // Checks that need nothing started.
  if (!existsSync(site) || !statSync(site).isDirectory()) throw new StartError('site', `${site} is not a directory`);
  if (!existsSync(VIRTIOFSD)) throw new StartError('virtiofsd', `virtiofsd not found at ${VIRTIOFSD}: run npm run setup`);
  try {
    findQemu();
  } catch (e) {
    throw new StartError('qemu', `${(e as Error).message} (or run npm run setup)`);
  }
  if (!existsSync(GUEST_BUNDLE)) throw new StartError('image', `guest bundle ${GUEST_BUNDLE} is missing: run node build.mjs`);
  if (useSnapshot && !existsSync(GUEST_SNAPSHOT_ENTRY)) throw new StartError('image', `guest bundle ${GUEST_SNAPSHOT_ENTRY} is missing: run node build.mjs`);
  if (!existsSync(ADDON)) throw new StartError('image', `native addon ${ADDON} is missing: run node build.mjs`);

  const stops: Array<() => Promise<void>> = [];
  let stopping = false;
  const stopAll = async (): Promise<void> => {
    stopping = true;
    for (const s of stops.splice(0).reverse()) {
      try {
        await s();
      } catch (e) {
        progress(`while stopping: ${(e as Error).message}`);
      }
    }
  };

  try {
    const t0 = performance.now();
    progress('building image…');
    const dmaPages = drivers === 'kernel' ? 1 : DMA_PAGES[machine];
    const hugepages = drivers === 'kernel' ? 2 : dmaPages;
    const guestArgs = [`--drivers=${drivers}`, `--port=${GUEST_WEB_PORT}`, `--pingpong-port=${GUEST_PINGPONG_PORT}`, '--tag=site'];
    if (drivers === 'ours') guestArgs.push(`--dma-pages=${dmaPages}`);
    if (drivers === 'ours' && opts.txMode) guestArgs.push(`--tx-mode=${opts.txMode}`);
    guestArgs.push(...(opts.guestArgs ?? []));
    const nodeOptions = opts.nodeOptions ?? [...GUEST_NODE_OPTIONS];
    let image: AnyGuestImage;
    try {
      // The snapshot holds the node options it was built with: the guest's node must get the same.
      const snapshot = useSnapshot ? await buildStartupSnapshot({ entry: GUEST_SNAPSHOT_ENTRY, name: 'appliance', nodeOptions }) : undefined;
      image = await buildNodeGuest({
        machine,
        main: GUEST_BUNDLE,
        ...(snapshot ? { snapshot: snapshot.path } : {}),
        name: drivers === 'kernel' ? 'appliance-kernel' : 'appliance',
        args: guestArgs,
        files: [{ guest: '/app/tsvirtio.node', host: ADDON }],
        hugepages,
        modules: drivers === 'kernel' ? KERNEL_DRIVER_MODULES : [],
        nodeOptions,
        ...(opts.compression ? { compression: opts.compression } : {}),
        kernelBuild: { progress },
      });
    } catch (e) {
      throw new StartError('image', (e as Error).message);
    }
    const imageMs = performance.now() - t0;
    const cached = image.machine === 'q35' ? image.initramfs.cached : image.squashfs.cached && image.guestKernel.cached;
    progress(`image ready (${machine}, ${cached ? 'cached' : 'built'}, ${(image.imageBytes / 1e6).toFixed(1)} MB) in ${since(t0)}`);
    const need = memoryNeed(image, hugepages);
    if (memoryMiB < need.mib) {
      throw new StartError('guest', `--memory ${memoryMiB} is too little for this image: it needs at least ${need.mib} MiB (${need.breakdown})`);
    }

    const socketDir = mkdtempSync(join(tmpdir(), 'tsv-app-'));
    stops.push(async () => rmSync(socketDir, { recursive: true, force: true }));

    // virtiofsd on the site folder.
    const fsSocket = join(socketDir, 'fs.sock');
    let virtiofsdErr = '';
    // Its own process group, as QEMU's: a terminal's Ctrl-C must not end it under a running guest.
    const virtiofsd = spawn(VIRTIOFSD, [`--socket-path=${fsSocket}`, '-o', `source=${site}`, '-o', 'sandbox=chroot'], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    virtiofsd.stderr?.on('data', (d: Buffer) => {
      virtiofsdErr = (virtiofsdErr + d.toString()).slice(-4000);
    });
    const spawnFailed = new Promise<never>((_, reject) => virtiofsd.once('error', (e) => reject(new StartError('virtiofsd', `cannot run ${VIRTIOFSD}: ${e.message}`))));
    spawnFailed.catch(() => {});
    stops.push(() => killChild(virtiofsd));
    await Promise.race([waitForSocket(fsSocket, virtiofsd, () => virtiofsdErr), spawnFailed]);
    const virtiofsdPid = virtiofsd.pid!;

    // The vsock daemon, in this process.
    const frontEnd: { timeline: BootTimeline | null } = { timeline: null };
    const vsockSocket = join(socketDir, 'vsock.sock');
    const hybridSocket = join(socketDir, 'vsock.uds');
    let daemon: RunningDaemon;
    try {
      daemon = await startDaemon(
        {
          vms: [{ guestCid: GUEST_CID, socketPath: vsockSocket, udsPath: hybridSocket }],
          forwards: [
            { listenHost: '127.0.0.1', listenPort: opts.port, guestCid: GUEST_CID, guestPort: GUEST_WEB_PORT },
            { listenHost: '127.0.0.1', listenPort: opts.pingPongPort ?? (opts.port === 0 ? 0 : opts.port + 1), guestCid: GUEST_CID, guestPort: GUEST_PINGPONG_PORT },
          ],
        },
        {
          log: opts.daemonLog ?? (() => {}),
          // QEMU connects to the vhost-user socket once it has built the machine, before the firmware runs.
          onFrontEnd: (_cid, event) => {
            if (event === 'connected' && frontEnd.timeline) {
              frontEnd.timeline.markHost('front-end-connected');
              opts.onStage?.('front-end-connected', frontEnd.timeline);
            }
          },
        },
      );
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new StartError('daemon', err.code === 'EADDRINUSE' ? `cannot listen on 127.0.0.1:${opts.port} or the next port: already in use (pick another with --port)` : err.message);
    }
    stops.push(() => daemon.close());
    const webPort = daemon.forwards[0]!.address()!.port;
    const pingPongPort = daemon.forwards[1]!.address()!.port;

    // QEMU.
    const tBoot = performance.now();
    progress(`booting (${machine}, ${memoryMiB} MiB)…`);
    const timeline = new BootTimeline(tBoot);
    frontEnd.timeline = timeline;
    const stage = (point: string): void => opts.onStage?.(point, timeline);
    let qemu: QemuInstance;
    try {
      qemu = launchQemu({
        ...bootOptions(image),
        memoryMiB,
        onLine: (line) => {
          if (timeline.onConsoleLine(line)) {
            const name = /tsvirtio-stage: (\S+)/.exec(line)![1]!;
            stage(name);
          }
        },
        cpus: opts.cpus,
        vhostUserVsock: { socket: vsockSocket },
        virtiofs: { socket: fsSocket, tag: 'site' },
        echo: opts.echoConsole ? '[guest] ' : false,
      });
    } catch (e) {
      throw new StartError('qemu', (e as Error).message);
    }
    stops.push(async () => {
      if (qemu.running) await qemu.stop();
    });
    try {
      await qemu.waitForLine(READY_MARKER, bootTimeoutMs);
    } catch (e) {
      if (!qemu.running) {
        const exit = await qemu.exited;
        throw new StartError('guest', describeExit(exit, tail(qemu.console()), qemu.console(), { memoryMiB, need }));
      }
      throw new StartError('guest', `${(e as Error).message.split('\n')[0]}; last console lines:\n${tail(qemu.console())}`);
    }
    progress(`guest listening (${since(tBoot)} after launch)`);
    // The webserver answers through the forward.
    for (let attempt = 1; ; attempt++) {
      try {
        const status = await httpStatus(webPort, opts.readinessPath ?? '/');
        if (status === 200 || status === 404) {
          timeline.markHost('first-response');
          stage('first-response');
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

    const crashed = new Promise<string>((resolvePromise) => {
      void qemu.exited.then((exit) => {
        if (!stopping) resolvePromise(describeExit(exit, tail(qemu.console()), qemu.console(), { memoryMiB, need }));
      });
      virtiofsd.once('exit', (code, signal) => {
        if (!stopping) resolvePromise(`virtiofsd (pid ${virtiofsdPid}) exited (${code ?? signal}): ${virtiofsdErr.trim() || '(no output)'}`);
      });
    });

    return {
      url: `http://127.0.0.1:${webPort}/`,
      webPort,
      pingPongPort,
      qemuPid: qemu.pid,
      virtiofsdPid,
      socketDir,
      hybridSocket,
      qemu,
      daemon,
      crashed,
      bootMs,
      imageMs,
      machine,
      memoryMiB,
      image,
      timeline,
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** Socket files left in a folder (for the shutdown check). */
export function socketFilesIn(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => statSync(join(dir, n)).isSocket());
}
