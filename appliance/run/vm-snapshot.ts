// Saved VM states ("VM snapshots"): the appliance comes up by restoring a guest that had
// already booted, instead of booting it. Under TCG a cold boot spends about 1.1 s in
// node's own start alone (QEMU translates every instruction of it afresh); a restore
// loads the guest's memory and goes on from the moment it was saved.
//
// The first start of an image boots it restorable (launch.ts `restorable`) with
// tsvirtio.snapshot=1: boot() stops at its snapshot point (kernel/guest/resume.ts: node
// started, the program loaded, its DMA memory ready, no device open yet) and prints the
// snapshot-ready stage. The host stops the VM, saves its state over QMP (`migrate
// exec:cat > FILE`) into .cache/vm-states/<name>-<key>.state, and lets the same VM go on.
// Later starts launch QEMU with `-incoming exec:cat FILE` and go on once QMP says the load
// completed. Going on is the same both ways (resumeVm): QMP device_add of each vhost-user
// device into its empty PCIe root port; the resume line on the console
// (kernel/guest/resume-line.ts: the host's time and fresh random bytes, since the guest's
// clock and random state are those of the moment of the save); then `cont`. QEMU 7.2 refuses to
// save or load a VM that has a vhost-user device ("State blocked by non-migratable
// device"), and virtio-mmio has no hotplug: so the devices come after the load, on PCI
// (microvm with acpi=on,pcie=on), and the guest waits for them (boot.ts).
//
// The kernel arguments of a restorable guest differ from a cold one's (restorableKernelArgs):
// - no `nolapic_timer`: with the PIT as its clock event device, a restored guest's
//   timers never fired again (it idled in HLT for good); the local APIC timer's state
//   survives a restore. Its calibration costs the first boot about 0.2 s, once.
// - `pcie_ports=native`: QEMU's microvm tables have no MCFG, so the kernel cannot claim
//   native hotplug through _OSC, and without it no hotplug event is seen;
// - no `acpi=off`: the machine has ACPI (its PCIe host bridge is described there).
//
// A state belongs to one image and one QEMU: the key hashes QEMU's binary, the kernel
// and root file system files, every QEMU argument (the kernel command line with the
// program's arguments included) except the per-launch socket paths and the host TSC rate
// measured at each launch, and VM_STATE_VERSION.
// A state that does not load is deleted and the guest boots cold and saves a new one
// (start-guest.ts). States live in .cache/vm-states/ ($TSVIRTIO_VM_STATE_DIR elsewhere).
//
// Every guest restored from one state shares what node set up before the save: V8's hash
// seed and Math.random's state, and the layout of its address space. The kernel's and
// OpenSSL's random generators get the fresh bytes of the resume line.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileFingerprint, pruneStale, reuseCached } from '../image/cache-files.js';
import { cacheDir } from '../image/debian.js';
import { type QemuExit, type QemuInstance, shellQuote } from '../qemu/launch.js';
import { type QmpClient, connectQmp } from '../qemu/qmp.js';
import { RESUME_ENTROPY_BYTES, SNAPSHOT_KERNEL_PARAM, formatResumeLine } from '../../kernel/guest/resume-line.js';

/** Bump when what a state holds changes in a way the key does not see (the guest's snapshot point, the resume protocol). */
export const VM_STATE_VERSION = 1;
/** Superseded states of the same name older than this are deleted after a save. */
const PRUNE_AGE_MS = 30 * 60 * 1000;
/** Saving or loading ~80 MB takes about 0.2-0.6 s here; this is a safety net for a loaded machine. */
const MIGRATION_TIMEOUT_MS = 120_000;
/** How long a QMP failure waits for QEMU's end, to report that as its cause. */
const QEMU_END_GRACE_MS = 5000;

export type VmStateErrorCode = 'ERR_VM_STATE_SAVE' | 'ERR_VM_STATE_LOAD';

export class VmStateError extends Error {
  constructor(
    readonly code: VmStateErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'VmStateError';
  }
}

/** The kernel command line of a restorable guest, from a cold one's (see the top of this file). */
export function restorableKernelArgs(append: string): string {
  // The program's arguments (TSVIRTIO_ARG_N=..., last: init reads them from its
  // environment; one may be a quoted phrase) are kept as they are.
  const argsAt = append.search(/(^|\s)TSVIRTIO_ARG_\d/);
  const head = argsAt < 0 ? append : append.slice(0, argsAt);
  const programArgs = argsAt < 0 ? '' : append.slice(argsAt).trim();
  const params = head
    .trim()
    .split(/\s+/)
    .filter((p) => p !== '' && p !== 'nolapic_timer' && p !== 'acpi=off' && p !== SNAPSHOT_KERNEL_PARAM && !p.startsWith('pcie_ports='));
  return [...params, 'pcie_ports=native', SNAPSHOT_KERNEL_PARAM, ...(programArgs ? [programArgs] : [])].join(' ');
}

export interface VmStatePlan {
  /** Where the state is (or will be) saved: `<dir>/<name>-<key>.state`. */
  path: string;
  name: string;
  /** 16 hex digits. */
  key: string;
}

/**
 * Where the state of a guest launched with `qemuArgs` goes. `socketDir` (the per-launch
 * folder of its sockets) is left out of the key; `files` are the kernel and root file
 * system, `qemu` the QEMU binary.
 */
export function vmStatePlan(name: string, qemuArgs: readonly string[], socketDir: string, files: readonly string[], qemu: string, outDir = vmStateDir()): VmStatePlan {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new VmStateError('ERR_VM_STATE_SAVE', `bad VM state name: ${JSON.stringify(name)}`);
  const h = createHash('sha256');
  h.update(`tsvirtio-vm-state v${VM_STATE_VERSION}\n`);
  const realQemu = realpathSync(qemu);
  h.update(`qemu ${realQemu} ${fileFingerprint(realQemu)}\n`);
  // The image cache touches its files at every use: their mtime is no fingerprint.
  for (const f of files) h.update(`file ${f} ${fileFingerprint(f, { ignoreMtime: true })}\n`);
  const args = [...qemuArgs];
  const incoming = args.indexOf('-incoming');
  if (incoming >= 0) args.splice(incoming, 2);
  // The host's TSC rate, measured at each launch (host-tsc.ts), matters only to a booting kernel.
  for (const a of args) h.update(`arg ${a.split(socketDir).join('<sockets>').replace(/\btsc_early_khz=\d+/, 'tsc_early_khz=<measured>')}\n`);
  const key = h.digest('hex').slice(0, 16);
  return { path: join(outDir, `${name}-${key}.state`), name, key };
}

/** Where states are kept: $TSVIRTIO_VM_STATE_DIR (created if missing), else .cache/vm-states. */
export function vmStateDir(): string {
  const dir = process.env['TSVIRTIO_VM_STATE_DIR'];
  if (dir === undefined || dir === '') return cacheDir('vm-states');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** True when a saved state exists for `plan` (and marks it used, for pruning). */
export function haveVmState(plan: VmStatePlan): boolean {
  return reuseCached(plan.path);
}

/** How QEMU ended, for messages: its exit and the last lines of its stderr. */
export function describeQemuEnd(e: QemuExit): string {
  const err = e.stderr.trim().split('\n').slice(-3).join('; ');
  return `QEMU exited (code ${e.qemuCode}, signal ${e.signal})${err ? `: ${err}` : ''}`;
}

interface MigrateStatus {
  status?: string;
  'error-desc'?: string;
}

/** Connecting to a restorable QEMU's QMP failed; `qemuEnd` is QEMU's end when that was why. */
export class QmpUnavailable extends Error {
  constructor(
    message: string,
    readonly qemuEnd: QemuExit | null,
  ) {
    super(message);
    this.name = 'QmpUnavailable';
  }
}

/**
 * QEMU's end, if it comes within `ms`. QEMU closes its QMP socket as it exits, a moment
 * before the exit is seen here (an incoming migration that fails ends QEMU at any point of
 * the conversation): a QMP failure is read with QEMU's end when there is one.
 */
function qemuEndWithin(exited: Promise<QemuExit>, ms: number): Promise<QemuExit | null> {
  return Promise.race([exited, delay(ms, null, { ref: false })]);
}

/** Connects to a restorable QEMU's QMP socket; a failure is a QmpUnavailable, with QEMU's end when that was why. */
export async function connectRestorableQmp(socket: string, exited: Promise<QemuExit>, opts: { timeoutMs: number; graceMs?: number }): Promise<QmpClient> {
  try {
    return await connectQmp(socket, { abandon: exited, timeoutMs: opts.timeoutMs });
  } catch (e) {
    const end = await qemuEndWithin(exited, opts.graceMs ?? QEMU_END_GRACE_MS);
    const message = (e as Error).message;
    throw new QmpUnavailable(end === null ? message : `${message} (${describeQemuEnd(end)})`, end);
  }
}

/** Polls query-migrate while its status is one of `busy`; a VmStateError `code` unless it then completed. */
async function awaitMigration(qmp: QmpClient, busy: readonly string[], exited: Promise<QemuExit>, what: string, code: VmStateErrorCode): Promise<void> {
  const t0 = performance.now();
  for (;;) {
    let r: MigrateStatus;
    try {
      r = await qmp.execute<MigrateStatus>('query-migrate');
    } catch (e) {
      const end = await qemuEndWithin(exited, QEMU_END_GRACE_MS);
      throw new VmStateError(code, end === null ? `${what}: ${(e as Error).message}` : `${describeQemuEnd(end)} while ${what}`);
    }
    // No status yet: an incoming migration that has not started reading.
    const status = r.status ?? 'none';
    if (status === 'completed') return;
    if (!busy.includes(status)) throw new VmStateError(code, `${what} ended ${status}${r['error-desc'] ? `: ${r['error-desc']}` : ''}`);
    if (performance.now() - t0 > MIGRATION_TIMEOUT_MS) throw new VmStateError(code, `${what}: still ${status} after ${MIGRATION_TIMEOUT_MS / 1000} s`);
    await new Promise((res) => setTimeout(res, 5));
  }
}

/**
 * Stops the VM and saves its state to `plan.path`. The shell QEMU runs renames the file
 * into place once `cat` has written all of it (QEMU may report the migration completed
 * before `cat` is done): a state is whole or absent. The VM stays stopped: resumeVm()
 * lets it go on.
 */
export async function saveVmState(qmp: QmpClient, plan: VmStatePlan, exited: Promise<QemuExit>): Promise<{ bytes: number }> {
  const tmp = `${plan.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  rmSync(plan.path, { force: true });
  try {
    await qmp.execute('stop');
    await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(tmp)} && mv ${shellQuote(tmp)} ${shellQuote(plan.path)}` });
    await awaitMigration(qmp, ['none', 'setup', 'active', 'pre-switchover', 'device'], exited, 'saving the VM state', 'ERR_VM_STATE_SAVE');
    const t0 = performance.now();
    while (!existsSync(plan.path)) {
      if (performance.now() - t0 > MIGRATION_TIMEOUT_MS) throw new VmStateError('ERR_VM_STATE_SAVE', `QEMU saved the VM state, but ${plan.path} did not appear within ${MIGRATION_TIMEOUT_MS / 1000} s`);
      await new Promise((res) => setTimeout(res, 2));
    }
  } finally {
    rmSync(tmp, { force: true });
  }
  pruneStale(dirname(plan.path), plan.name, 'state', plan.path, PRUNE_AGE_MS);
  return { bytes: statSync(plan.path).size };
}

/** Resolves when QEMU (started with `-incoming`) has loaded the state; a VmStateError ERR_VM_STATE_LOAD when it could not. */
export async function waitForStateLoaded(qmp: QmpClient, exited: Promise<QemuExit>): Promise<void> {
  await awaitMigration(qmp, ['none', 'setup', 'active', 'device'], exited, 'loading the VM state', 'ERR_VM_STATE_LOAD');
}

/**
 * Lets a stopped VM (just saved, or just loaded) go on: the vhost-user devices plugged
 * into their root ports (launch.ts hotplugDevices()) and the resume line written while it
 * is still stopped, then `cont`. Plugging takes QEMU's main loop (a vhost-user handshake
 * per device), which a running guest would wait for; done first, the guest finds the
 * hotplug events and the line waiting when it runs again.
 */
export async function resumeVm(qemu: QemuInstance, qmp: QmpClient, devices: ReadonlyArray<Record<string, string>>): Promise<void> {
  for (const d of devices) await qmp.execute('device_add', d);
  qemu.write(formatResumeLine(Date.now(), randomBytes(RESUME_ENTROPY_BYTES)));
  await qmp.execute('cont');
}
