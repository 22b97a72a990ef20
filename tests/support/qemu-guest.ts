// The QEMU guest tests' common part: boot a guest program (a dist/bundles/ file) on
// either machine with the devices a test needs, one guest per machine per test file,
// and stop everything a test started (QEMU, daemons, virtiofsd, servers, temporary
// folders) by process id, even when the test fails.
//
//   const guests = new GuestPerMachine(async (machine, cleanup) => {
//     const dir = cleanup.tempDir('guest-x-');
//     ...start back ends, registering each: cleanup.process(child), cleanup.add(() => server.close())
//     const qemu = await launchGuest(machine, { main: bundlePath('x.js'), vhostUserVsock: { socket }, timeoutMs }, cleanup);
//     return { qemu, ... };
//   });
//   test.after.always(() => guests.stopAll());
//   for (const machine of MACHINES) test.serial(`${machine}: ...`, async (t) => { const g = await guests.get(machine); ... });
//
// Machines boot one after the other: asking for the next machine's guest stops the
// previous one first (CI runs two test files at once on two cores; two guests per file
// at once would only make each slower). So a file registers its tests grouped by
// machine (the loop above, or one loop per machine around all of them).
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MACHINES as ALL_MACHINES, type Machine, bootOptions, parseMachine } from '../../appliance/image/guest.js';
import { buildNodeGuest } from '../../appliance/image/node-guest.js';
import { type QemuInstance, launchQemu, qemuAvailable } from '../../appliance/qemu/launch.js';
import { type VirtiofsdProcess, spawnVirtiofsd } from '../../appliance/qemu/virtiofsd.js';
import { VsockDevice } from '../../drivers/virtio-vsock/device/vsock-device.js';
import { type VhostUserServer, startVhostUserServer } from '../../kernel/vhost-user/server.js';
import { VIRTIO_PCI_MODERN_DEVICE_BASE } from '../../kernel/transport/pci-virtio-caps.js';
import { spawnDaemon } from './daemon-process.js';

export type { Machine };

/**
 * The machines the guest tests boot, in this order: both, or those listed in
 * TSVIRTIO_TEST_MACHINES (comma-separated, e.g. "microvm"), to look at one of them.
 */
export const MACHINES: readonly Machine[] = process.env['TSVIRTIO_TEST_MACHINES'] ? process.env['TSVIRTIO_TEST_MACHINES'].split(',').map((m) => parseMachine(m.trim(), 'TSVIRTIO_TEST_MACHINES')) : ALL_MACHINES;

/** The repository root (this file is dist/tests/support/qemu-guest.js). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const ADDON = join(ROOT, 'build/Release/tsvirtio.node');

/** A guest program bundled by build.mjs. */
export const bundlePath = (name: string): string => join(ROOT, 'dist/bundles', name);

/**
 * Whether QEMU and the given files (bundles, the addon, virtiofsd...) are there; when
 * not, warns once with `what` and the tests are to be skipped.
 */
export function guestTestsReady(what: string, files: readonly string[]): boolean {
  const missing = files.filter((f) => !existsSync(f));
  const ok = qemuAvailable() && missing.length === 0;
  if (!ok) console.warn(`${what}: skipped (needs qemu-system-x86_64${missing.length ? ` and ${missing.join(', ')}` : ''}; run \`node build.mjs\`)`);
  return ok;
}

/** Ends a child process by its id: SIGTERM, SIGKILL after `graceMs`; resolves once it has exited. */
export async function stopProcess(child: ChildProcess, graceMs = 3000): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(pid, s);
    } catch {
      /* already gone */
    }
  };
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

/** What a test started, stopped in reverse order by run() (once; later calls wait for the same run). */
export class Cleanup {
  private readonly steps: Array<() => unknown> = [];
  private running: Promise<void> | null = null;

  /** True once run() was called: nothing may be added any more. */
  get done(): boolean {
    return this.running !== null;
  }

  /** Registers a step; after run() it is run at once (what was started is not left behind) and add throws. */
  add(step: () => unknown): void {
    if (this.running !== null) {
      void this.running.finally(step).catch(() => {});
      throw new Error('cleanup already ran: the test was stopped while starting');
    }
    this.steps.push(step);
  }

  /** A child process (daemon, virtiofsd), stopped by its id. */
  process<C extends ChildProcess>(child: C): C {
    this.add(() => stopProcess(child));
    return child;
  }

  /** A QEMU instance, stopped by the launcher (SIGTERM, then SIGKILL, to its pid). */
  qemu(q: QemuInstance): QemuInstance {
    this.add(() => (q.running ? q.stop() : undefined));
    return q;
  }

  /** A new temporary folder (removed in turn: after what was registered later). */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.add(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      const errors: unknown[] = [];
      for (const step of this.steps.splice(0).reverse()) {
        try {
          await step();
        } catch (e) {
          errors.push(e);
        }
      }
      if (errors.length > 0) throw new AggregateError(errors, `cleanup: ${errors.length} step(s) failed`);
    })();
    return this.running;
  }
}

/** Debian's virtiofsd serving `source` on `socketPath` (ready: its socket exists). */
export async function startVirtiofsd(cleanup: Cleanup, opts: { socketPath: string; source: string }): Promise<VirtiofsdProcess> {
  const vfs = spawnVirtiofsd(opts);
  cleanup.process(vfs.child);
  await vfs.ready;
  return vfs;
}

/** The vhost-user-vsock daemon as a separate process (support/daemon-process.ts), ready for QEMU on `socket`. */
export async function startDaemonProcess(cleanup: Cleanup, args: readonly string[], socket: string): Promise<void> {
  const { child, ready } = spawnDaemon(args, socket);
  cleanup.process(child);
  await ready;
}

/** Our vsock device emulator for CID 3 behind a vhost-user server in this process, on `socket` (its log lines to `log`, if given). */
export async function startVsockBackend(cleanup: Cleanup, socket: string, log: (line: string) => void = () => {}): Promise<{ device: VsockDevice; server: VhostUserServer }> {
  const device = new VsockDevice({ guestCid: 3 });
  const server = await startVhostUserServer({ socketPath: socket, model: device, log: (level, message) => log(`${level} ${message}`) });
  cleanup.add(() => server.close());
  return { device, server };
}

export interface GuestSpec {
  /** The program (e.g. bundlePath('rng-probe.js')). */
  main: string;
  args?: string[];
  /** 2 MiB pages to reserve (default 32 on both machines: the probes ask for up to 24). */
  hugepages?: number;
  /** Image name in the cache (default from main). */
  name?: string;
  /** Guest RAM in MiB (launcher default: 1024). */
  memoryMiB?: number;
  vhostUserVsock?: { socket: string };
  virtiofs?: { socket: string; tag: string };
  /** QEMU's own virtio-rng device: virtio-rng-device (virtio-mmio) or modern-only virtio-rng-pci; 'packed' with packed=on (VIRTIO_F_RING_PACKED offered). */
  rng?: boolean | 'packed';
  /**
   * The vhost-user devices with packed=on (QEMU offers VIRTIO_F_RING_PACKED where the
   * back end does: vhost-user-fs masks it by virtiofsd's features, vhost-user-vsock
   * does not).
   */
  packedRings?: boolean;
  /** A safety net against a hung guest (QEMU is killed), not an assertion. */
  timeoutMs: number;
}

/** QEMU's virtio-rng on `machine` (with `packed`: offering the packed ring layout, virtio 1.2 2.8). */
export function rngDeviceArgs(machine: Machine, packed = false): string[] {
  return ['-device', (machine === 'microvm' ? 'virtio-rng-device' : 'virtio-rng-pci,disable-legacy=on') + (packed ? ',packed=on' : '')];
}

/**
 * Builds (or finds cached) the node guest image of `spec.main` for `machine`, with the
 * native addon at /app/tsvirtio.node, and starts QEMU; `cleanup` stops it.
 */
export async function launchGuest(machine: Machine, spec: GuestSpec, cleanup: Cleanup): Promise<QemuInstance> {
  const image = await buildNodeGuest({
    machine,
    main: spec.main,
    files: [{ guest: '/app/tsvirtio.node', host: ADDON }],
    hugepages: spec.hugepages ?? 32,
    ...(spec.args ? { args: spec.args } : {}),
    ...(spec.name ? { name: spec.name } : {}),
  });
  const packed = spec.packedRings === true;
  return cleanup.qemu(
    launchQemu({
      ...bootOptions(image),
      ...(spec.memoryMiB ? { memoryMiB: spec.memoryMiB } : {}),
      ...(spec.vhostUserVsock ? { vhostUserVsock: { ...spec.vhostUserVsock, packed } } : {}),
      ...(spec.virtiofs ? { virtiofs: { ...spec.virtiofs, packed } } : {}),
      extraArgs: spec.rng ? rngDeviceArgs(machine, spec.rng === 'packed') : [],
      timeoutMs: spec.timeoutMs,
    }),
  );
}

/**
 * The console line kernel/guest/boot.ts prints when it opened virtio device `id` with
 * uio interrupts: on microvm "virtio-mmio.N virtio-mmio@0x... -> /dev/uioN, virtio
 * device ID, interrupts: uioN IRQ" (uio_pdrv_genirq), on q35 "0000:00:xx.x 1af4:10xx ->
 * /dev/uioN, virtio device ID, interrupts: uioN INTx" (uio_pci_generic).
 */
export function deviceOpenedPattern(machine: Machine, id: number): RegExp {
  const where = machine === 'microvm' ? String.raw`virtio-mmio\.\d+ virtio-mmio@0x[0-9a-f]+` : `1af4:${(VIRTIO_PCI_MODERN_DEVICE_BASE + id).toString(16)}`;
  return new RegExp(`${where} -> /dev/uio\\d+, virtio device ${id}, interrupts: uio\\d+ ${machine === 'microvm' ? 'IRQ' : 'INTx'}`);
}

/** A kernel log message on the serial console ("[   12.345678] ..."), which may cut into a line of the program's. */
const KERNEL_MESSAGE = /\[\s*\d+\.\d{6}\][^\n]*\n?/g;

/**
 * The JSON after `marker` on the first console line that starts with it, or null. A
 * kernel message printed while the program wrote its (long) line can split it: kernel
 * messages are taken out and the following lines joined until the JSON is whole.
 */
export function resultLine<T>(consoleText: string, marker: string): T | null {
  const lines = consoleText.split('\n');
  const at = lines.findIndex((l) => l.startsWith(marker));
  if (at < 0) return null;
  const rest = lines.slice(at, at + 8).join('\n').slice(marker.length).replace(KERNEL_MESSAGE, '').split('\n');
  let text = '';
  for (const [i, part] of rest.entries()) {
    text += part;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      if (i === rest.length - 1) {
        // Say what the console held, so that a line split by something else can be told.
        const shown = lines.slice(at, at + 8).map((l) => (l.length > 300 ? `${l.slice(0, 150)} … ${l.slice(-150)} (${l.length} chars)` : l));
        throw new SyntaxError(`${(e as Error).message}; the console from the "${marker.trim()}" line on:\n${shown.join('\n')}`);
      }
    }
  }
  return null;
}

/**
 * One guest per machine per test file, booted on first use. Asking for a machine stops
 * the guests of the machines asked for before (and everything their start registered):
 * one guest at a time, so tests are to be grouped by machine.
 */
export class GuestPerMachine<G> {
  private readonly booted = new Map<Machine, { guest: Promise<G>; cleanup: Cleanup }>();

  constructor(private readonly start: (machine: Machine, cleanup: Cleanup) => Promise<G>) {}

  get(machine: Machine): Promise<G> {
    const known = this.booted.get(machine);
    if (known !== undefined) {
      if (known.cleanup.done) return Promise.reject(new Error(`the ${machine} guest was stopped when another machine's guest started: register the tests grouped by machine`));
      return known.guest;
    }
    const previous = [...this.booted.values()].map((b) => b.cleanup.run().catch(() => {}));
    const cleanup = new Cleanup();
    const guest = Promise.all(previous).then(() => this.start(machine, cleanup));
    this.booted.set(machine, { guest, cleanup });
    return guest;
  }

  /** Stops every guest and what came with it (test.after.always). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.booted.values()].map((b) => b.cleanup.run()));
  }
}
