// Boots one guest program on this host with everything it needs around it, in order:
// its image (guest-image.ts, cached), one virtiofsd per shared folder, the
// vhost-user-vsock daemon in this process (guest CID 3, a hybrid socket, TCP forwards
// host:port -> guest port), and QEMU; then waits for the program's ready line on the
// console. Used by `tsvirtio start` (the webserver appliance, appliance.ts) and
// `tsvirtio run` (a user's program, appliance/runtime/host/run-program.ts).
//
// A part that fails stops what was started before it and is named (StartError.part).
// stop() ends QEMU (SIGTERM, then SIGKILL), closes the daemon, stops each virtiofsd by
// pid and removes the socket folder, in that order. QEMU and virtiofsd run in their own
// process groups: a terminal's Ctrl-C reaches only this process, which stops them.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startDaemon, type RunningDaemon } from '../../drivers/virtio-vsock/daemon/daemon.js';
import { bootOptions, type AnyGuestImage, type Machine } from '../image/guest.js';
import type { IcuData } from '../image/icu-data.js';
import type { SquashfsCompression } from '../image/squashfs.js';
import { type QemuExit, type QemuInstance, type QemuOptions, findQemu, hotplugDevices, launchQemu, qemuArgs } from '../qemu/launch.js';
import { VIRTIOFSD_PATH, type VirtiofsdProcess, spawnVirtiofsd } from '../qemu/virtiofsd.js';
import { BootTimeline, RESTORE_WATERFALL_POINTS, SAVE_WATERFALL_POINTS } from './boot-stages.js';
import { type GuestProgram, buildGuestImage, imageWasCached, missingInputs } from './guest-image.js';
import { memoryNeed, type MemoryNeed, outOfMemoryIn } from './guest-memory.js';
import { type VmStatePlan, QmpUnavailable, VmStateError, connectRestorableQmp, describeQemuEnd, haveVmState, restorableKernelArgs, resumeVm, saveVmState, vmStatePlan, waitForStateLoaded } from './vm-snapshot.js';

export const VIRTIOFSD = VIRTIOFSD_PATH;
export const GUEST_CID = 3;
/** How long QEMU may take to end after a virtiofsd did before that virtiofsd counts as the failure. */
const VIRTIOFSD_EXIT_GRACE_MS = 2000;

export type Part = 'site' | 'share' | 'image' | 'virtiofsd' | 'daemon' | 'qemu' | 'guest';

export class StartError extends Error {
  constructor(
    readonly part: Part,
    message: string,
  ) {
    super(`${part}: ${message}`);
    this.name = 'StartError';
  }
}

/** A host folder the guest reads through virtio-fs (virtiofsd; our driver only reads). */
export interface Share {
  dir: string;
  /** The virtio-fs tag the guest sees. */
  tag: string;
}

/** A TCP listener on the host whose connections go to a vsock port of the guest. */
export interface Forward {
  /** Address to listen on (e.g. 127.0.0.1). */
  host: string;
  /** TCP port (0: any free port; the one taken is in RunningGuest.forwardPorts). */
  port: number;
  /** The guest's vsock port. */
  guestPort: number;
}

export interface StartGuestOptions {
  program: GuestProgram;
  machine: Machine;
  memoryMiB: number;
  shares: readonly Share[];
  forwards: readonly Forward[];
  /** The console line (substring) that says the program is up; start returns once it is seen. */
  readyLine: string;
  /** How long the guest may take to print it (default 5 min: TCG on a loaded machine). */
  bootTimeoutMs?: number;
  /** Guest vCPUs (default 1). */
  cpus?: number;
  /** The vhost-user devices with packed=on: QEMU offers the packed ring layout (virtio 1.2 2.8) where the back end does (our vsock daemon: yes; virtiofsd 7.2: no). */
  packedRings?: boolean;
  /** microvm: root file system compression (default lz4). */
  compression?: SquashfsCompression;
  /** microvm: node's ICU data, en (default) or full (appliance/image/icu-data.ts). */
  icu?: IcuData;
  /** Copy the console to stderr, each line prefixed with this (or "[guest] " for true). */
  echoConsole?: boolean | string;
  /** Every console line (stage markers included). */
  onLine?: (line: string) => void;
  /** Progress lines ("building image…"). */
  progress?: (line: string) => void;
  /** Daemon log lines (default: dropped). */
  daemonLog?: (line: string) => void;
  /** Called with each boot stage as it is seen (the timeline so far). */
  onStage?: (point: string, timeline: BootTimeline) => void;
  /** The message when a forward's port is taken (default: names the address). */
  portInUse?: (e: NodeJS.ErrnoException) => string;
  /**
   * microvm: come up from a saved VM state (vm-snapshot.ts): the first start boots and
   * saves one, later starts restore it (default false: a cold boot every time).
   */
  vmSnapshot?: boolean;
}

/** How a restorable guest came up: its state saved by this start, or restored from a saved one. */
export interface VmStateUse {
  mode: 'saved' | 'restored';
  path: string;
  bytes: number;
}

export interface RunningGuest {
  readonly qemu: QemuInstance;
  readonly daemon: RunningDaemon;
  /** The host port of each forward, in order (a port 0 resolved). */
  readonly forwardPorts: readonly number[];
  readonly virtiofsdPids: readonly number[];
  readonly socketDir: string;
  /** The daemon's hybrid socket (Firecracker's convention: `CONNECT <port>\n`). */
  readonly hybridSocket: string;
  readonly image: AnyGuestImage;
  readonly imageMs: number;
  readonly machine: Machine;
  readonly memoryMiB: number;
  readonly need: MemoryNeed;
  /** performance.now() when QEMU was spawned. */
  readonly launchedAt: number;
  /** Launch to the ready line, stage by stage. */
  readonly timeline: BootTimeline;
  /** With vmSnapshot: whether this start saved the VM state or restored it; else null. */
  readonly vmState: VmStateUse | null;
  /** Settles (never rejects) with a reason when a virtiofsd ended without stop(). */
  readonly virtiofsdDied: Promise<string>;
  /** Settles (never rejects) with a reason when QEMU or a virtiofsd ended without stop(). */
  readonly crashed: Promise<string>;
  /** Why QEMU ended, for messages (out of memory, a panic, the program's status, QEMU's). */
  describe(exit: QemuExit): string;
  stop(): Promise<void>;
}

const since = (t0: number): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;

/** The last `lines` lines of a console. */
export const tail = (text: string, lines = 15): string => text.trimEnd().split('\n').slice(-lines).join('\n');

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

/** Checks that need nothing started: the shared folders, virtiofsd (with shares), QEMU, the program's files. */
export function checkParts(opts: Pick<StartGuestOptions, 'program' | 'shares'>, sharePart: Part = 'share'): void {
  for (const s of opts.shares) {
    const dir = resolve(s.dir);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new StartError(sharePart, `${dir} is not a directory`);
  }
  if (opts.shares.length > 0 && !existsSync(VIRTIOFSD)) throw new StartError('virtiofsd', `virtiofsd not found at ${VIRTIOFSD}: run npm run setup`);
  try {
    findQemu();
  } catch (e) {
    throw new StartError('qemu', `${(e as Error).message} (or run npm run setup)`);
  }
  const missing = missingInputs(opts.program);
  if (missing !== null) throw new StartError('image', missing);
}

async function killChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

/** virtiofsd on `dir`; registered in `stops` before it is waited for. */
async function startVirtiofsd(dir: string, socketPath: string, stops: Array<() => Promise<void>>): Promise<VirtiofsdProcess> {
  const v = spawnVirtiofsd({ socketPath, source: dir, detached: true });
  stops.push(() => killChild(v.child));
  try {
    await v.ready;
  } catch (e) {
    throw new StartError('virtiofsd', (e as Error).message.replace(/^virtiofsd /, ''));
  }
  return v;
}

/** A saved VM state that QEMU could not load: deleted, and the guest is booted cold to save a new one. */
class VmStateLoadFailed extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

export async function startGuest(opts: StartGuestOptions): Promise<RunningGuest> {
  try {
    return await startGuestOnce(opts, 'restore-or-save');
  } catch (e) {
    if (!(e instanceof VmStateLoadFailed)) throw e;
    rmSync(e.path, { force: true });
    opts.progress?.(`${e.message}: deleted it; booting cold to save a new one`);
    return startGuestOnce(opts, 'save');
  }
}

async function startGuestOnce(opts: StartGuestOptions, vmStateChoice: 'restore-or-save' | 'save'): Promise<RunningGuest> {
  const progress = opts.progress ?? (() => {});
  const { machine, memoryMiB, program } = opts;
  checkParts(opts);

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
    let image: AnyGuestImage;
    try {
      image = await buildGuestImage(program, { machine, progress, ...(opts.compression ? { compression: opts.compression } : {}), ...(opts.icu ? { icu: opts.icu } : {}) });
    } catch (e) {
      throw new StartError('image', (e as Error).message);
    }
    const imageMs = performance.now() - t0;
    progress(`image ready (${machine}, ${imageWasCached(image) ? 'cached' : 'built'}, ${(image.imageBytes / 1e6).toFixed(1)} MB) in ${since(t0)}`);
    const need = memoryNeed(image, program.hugepages);
    if (memoryMiB < need.mib) {
      throw new StartError('guest', `--memory ${memoryMiB} is too little for this image: it needs at least ${need.mib} MiB (${need.breakdown})`);
    }

    const socketDir = mkdtempSync(join(tmpdir(), 'tsv-app-'));
    stops.push(async () => rmSync(socketDir, { recursive: true, force: true }));

    const fsds: VirtiofsdProcess[] = [];
    const fsSockets = opts.shares.map((_, i) => join(socketDir, i === 0 ? 'fs.sock' : `fs${i}.sock`));
    for (const [i, s] of opts.shares.entries()) fsds.push(await startVirtiofsd(resolve(s.dir), fsSockets[i]!, stops));

    // The vsock daemon, in this process.
    const frontEnd: { timeline: BootTimeline | null } = { timeline: null };
    const vsockSocket = join(socketDir, 'vsock.sock');
    const hybridSocket = join(socketDir, 'vsock.uds');
    let daemon: RunningDaemon;
    try {
      daemon = await startDaemon(
        {
          vms: [{ guestCid: GUEST_CID, socketPath: vsockSocket, udsPath: hybridSocket }],
          forwards: opts.forwards.map((f) => ({ listenHost: f.host, listenPort: f.port, guestCid: GUEST_CID, guestPort: f.guestPort })),
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
      const err = e as NodeJS.ErrnoException & { address?: string; port?: number };
      if (err.code !== 'EADDRINUSE') throw new StartError('daemon', err.message);
      throw new StartError('daemon', opts.portInUse ? opts.portInUse(err) : `cannot listen on ${err.address ?? '?'}:${err.port ?? '?'}: already in use`);
    }
    stops.push(() => daemon.close());
    const forwardPorts = daemon.forwards.map((f) => f.address()!.port);

    // QEMU.
    const tBoot = performance.now();
    const restorable = opts.vmSnapshot === true && machine === 'microvm';
    // Which waterfall it is depends on the VM state plan, which needs these options.
    let timeline = new BootTimeline(tBoot);
    const qemuOptions: QemuOptions = {
      ...bootOptions(image),
      memoryMiB,
      onLine: (line) => {
        if (timeline.onConsoleLine(line)) opts.onStage?.(/tsvirtio-stage: (\S+)/.exec(line)![1]!, timeline);
        opts.onLine?.(line);
      },
      cpus: opts.cpus,
      vhostUserVsock: { socket: vsockSocket, packed: opts.packedRings === true },
      virtiofs: opts.shares.map((s, i) => ({ socket: fsSockets[i]!, tag: s.tag, packed: opts.packedRings === true })),
      echo: opts.echoConsole === true ? '[guest] ' : (opts.echoConsole ?? false),
    };
    let plan: VmStatePlan | null = null;
    let restoring = false;
    if (restorable) {
      qemuOptions.append = restorableKernelArgs(qemuOptions.append);
      qemuOptions.restorable = { qmpSocket: join(socketDir, 'qmp.sock') };
      plan = vmStatePlan(program.snapshotName ?? program.name, qemuArgs(qemuOptions), socketDir, [qemuOptions.kernel, qemuOptions.rootfs!], findQemu());
      restoring = vmStateChoice === 'restore-or-save' && haveVmState(plan);
      if (restoring) qemuOptions.restorable.incoming = plan.path;
      timeline = new BootTimeline(tBoot, restoring ? RESTORE_WATERFALL_POINTS : SAVE_WATERFALL_POINTS);
      // A restored guest's clock counts from the boot that saved it.
      if (restoring) timeline.newGuestEpoch();
    }
    frontEnd.timeline = timeline;
    progress(restoring ? `restoring the saved VM state (${machine}, ${memoryMiB} MiB)…` : `booting (${machine}, ${memoryMiB} MiB${restorable ? '; its state is saved for later starts' : ''})…`);
    let qemu: QemuInstance;
    try {
      qemu = launchQemu(qemuOptions);
    } catch (e) {
      throw new StartError('qemu', (e as Error).message);
    }
    stops.push(async () => {
      if (qemu.running) await qemu.stop();
    });
    const describe = (exit: QemuExit): string => describeExit(exit, tail(qemu.console()), qemu.console(), { memoryMiB, need });
    const waitForLine = async (pattern: string): Promise<void> => {
      try {
        await qemu.waitForLine(pattern, opts.bootTimeoutMs ?? 5 * 60_000);
      } catch (e) {
        if (!qemu.running) throw new StartError('guest', describe(await qemu.exited));
        throw new StartError('guest', `${(e as Error).message.split('\n')[0]}; last console lines:\n${tail(qemu.console())}`);
      }
    };
    let vmState: VmStateUse | null = null;
    if (plan !== null) vmState = await saveOrRestore(qemu, qemuOptions, plan, restoring, timeline, waitForLine, progress, stops);
    await waitForLine(opts.readyLine);

    // A virtiofsd also ends when QEMU does (its front end went away): only one that
    // ended under a QEMU still running a moment later is the failure.
    const virtiofsdDied = new Promise<string>((resolvePromise) => {
      for (const f of fsds) {
        f.child.once('exit', (code, signal) => {
          void Promise.race([qemu.exited, new Promise((r) => setTimeout(r, VIRTIOFSD_EXIT_GRACE_MS).unref())]).then(() => {
            if (!stopping && qemu.running) resolvePromise(`virtiofsd (pid ${f.child.pid}) exited (${code ?? signal}): ${f.stderr().trim() || '(no output)'}`);
          });
        });
      }
    });
    const crashed = new Promise<string>((resolvePromise) => {
      void qemu.exited.then((exit) => {
        if (!stopping) resolvePromise(describe(exit));
      });
      void virtiofsdDied.then(resolvePromise);
    });

    return {
      qemu,
      daemon,
      forwardPorts,
      virtiofsdPids: fsds.map((f) => f.child.pid!),
      socketDir,
      hybridSocket,
      image,
      imageMs,
      machine,
      memoryMiB,
      need,
      launchedAt: tBoot,
      timeline,
      vmState,
      virtiofsdDied,
      crashed,
      describe,
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/**
 * A restorable guest (vm-snapshot.ts) up to the point where it runs with its devices:
 * restored (the state loaded), or booted to its snapshot point and saved; then resumed.
 */
async function saveOrRestore(
  qemu: QemuInstance,
  qemuOptions: QemuOptions,
  plan: VmStatePlan,
  restoring: boolean,
  timeline: BootTimeline,
  waitForLine: (pattern: string) => Promise<void>,
  progress: (line: string) => void,
  stops: Array<() => Promise<void>>,
): Promise<VmStateUse> {
  let qmp;
  try {
    qmp = await connectRestorableQmp(qemuOptions.restorable!.qmpSocket, qemu.exited, { timeoutMs: 60_000 });
  } catch (e) {
    if (e instanceof QmpUnavailable && e.qemuEnd !== null && restoring) throw new VmStateLoadFailed(plan.path, `the saved VM state ${plan.path} did not load (${describeQemuEnd(e.qemuEnd)})`);
    throw new StartError('qemu', (e as Error).message);
  }
  stops.push(async () => qmp.close());
  timeline.markHost('qemu-up');
  let bytes: number;
  if (restoring) {
    try {
      await waitForStateLoaded(qmp, qemu.exited);
    } catch (e) {
      if (e instanceof VmStateError) throw new VmStateLoadFailed(plan.path, `the saved VM state ${plan.path} did not load (${e.message})`);
      throw e;
    }
    timeline.markHost('state-loaded');
    bytes = statSync(plan.path).size;
  } else {
    await waitForLine('tsvirtio-stage: snapshot-ready');
    try {
      bytes = (await saveVmState(qmp, plan, qemu.exited)).bytes;
    } catch (e) {
      throw new StartError('qemu', (e as Error).message);
    }
    timeline.markHost('state-saved');
    // The guest's clock did not run while the VM was stopped.
    timeline.newGuestEpoch();
    progress(`saved the VM state (${(bytes / 1e6).toFixed(1)} MB, ${plan.path}): later starts restore it`);
  }
  try {
    await resumeVm(qemu, qmp, hotplugDevices(qemuOptions));
  } catch (e) {
    throw new StartError('qemu', `cannot resume the VM: ${(e as Error).message}`);
  }
  return { mode: restoring ? 'restored' : 'saved', path: plan.path, bytes };
}
