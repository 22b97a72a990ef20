// The QEMU launcher: one qemu-system-x86_64 process per guest, serial console on a pipe.
// Two machines (appliance/image/guest.ts, Machine): microvm (virtio-mmio devices, our
// kernel through its PVH entry, the root a squashfs on a read-only virtio-blk disk) and
// q35 (PCI devices, Debian's kernel and an initramfs):
//
//   qemu-system-x86_64 -M microvm,acpi=off,memory-backend=mem -cpu max -m <mem> -smp <cpus>
//     -object memory-backend-memfd,id=mem,size=<mem>,share=on
//     -global virtio-mmio.force-legacy=false        (version 2 registers: virtio 1.2, 4.2.2)
//     -kernel <vmlinux> -append <cmdline> -nographic -nodefaults -no-reboot -serial ...
//     -drive id=root,file=<squashfs>,format=raw,if=none,readonly=on -device virtio-blk-device,drive=root
//     [-chardev socket,id=vsock0,path=<S> -device vhost-user-vsock-device,chardev=vsock0]
//     [-chardev socket,id=fs0,path=<S> -device vhost-user-fs-device,chardev=fs0,tag=<tag>]
//
//   qemu-system-x86_64 -M q35 -cpu max -m <mem> -smp <cpus>
//     -object memory-backend-memfd,id=mem,size=<mem>,share=on -machine q35,memory-backend=mem
//     -kernel <vmlinuz> -initrd <cpio> -append <cmdline>
//     -nographic -nodefaults -no-reboot -serial chardev:console (stdio)
//     [-chardev socket,id=vsock0,path=<S> -device vhost-user-vsock-pci,chardev=vsock0]
//     [-chardev socket,id=fs0,path=<S> -device vhost-user-fs-pci,chardev=fs0,tag=<tag>]
//
//   restorable (microvm, appliance/run/vm-snapshot.ts): -M microvm,acpi=on,pcie=on,...,
//     each vhost-user device's chardev with an empty pcie-root-port (the devices come
//     later, QMP device_add), -qmp unix:<S>,server=on,wait=off [-incoming exec:cat <state>]
//
// -cpu max stays (issue 17, interleaved microvm boots to the first response, medians):
// max,-avx,-avx2,-fma,... (with node --no-enable-avx,... so the startup snapshot's CPU
// feature tag still matches) 2,565 vs 2,690 ms, Nehalem,+rdrand 2,179 vs 2,078,
// max,-erms,-fsrm 2,385 vs 2,651 in one run and 4,891 vs 4,535 in another, -accel
// tcg,tb-size=256 2,205 vs 2,078 (6-8 rounds each): each inside the other's spread.
// The TCG code buffer (1 GiB by default here) holds a whole boot without a flush
// (62 MB, 109k blocks). A model without RDRAND (plain Nehalem, qemu64) costs ~1 s:
// node's first getrandom waits for the kernel's entropy (random.trust_cpu=on needs RDRAND).
// A different model also needs the snapshot rebuilt under it: V8's cached-data tag covers
// the CPU features it detects.
//
// Guest memory is always a shared memfd: vhost-user back ends map it, and without
// share=on a back end sees nothing and guest connects just time out.
//
// The exit status: the node guest prints `tsvirtio-exit: <N>` before powering off; that N
// is the status. Without the marker it is QEMU's own exit code (or null after a signal).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { RESUME_PREFIX } from '../../kernel/guest/resume-line.js';
import type { Machine } from '../image/guest.js';
import { findOnPath } from './find-binary.js';
import { boundToParent } from './parent-bound.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
export const QEMU_INSTALL_HINT = 'install it with: apt-get install -y qemu-system-x86';
export const DEFAULT_EXIT_MARKER = 'tsvirtio-exit:';

export class QemuError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'QemuError';
    this.code = code;
  }
}

export interface QemuOptions {
  /** The machine (default q35). */
  machine?: Machine;
  /** vmlinuz (q35) or a vmlinux with a PVH note (microvm), for -kernel. */
  kernel: string;
  /** q35: the initramfs, for -initrd. */
  initrd?: string;
  /** microvm: the root file system image (read-only virtio-blk disk, /dev/vda). */
  rootfs?: string;
  /** Kernel command line (for -append). */
  append: string;
  /** Guest RAM in MiB (default 1024). */
  memoryMiB?: number;
  /** vCPUs (default 1; under TCG more vCPUs are more host threads). */
  cpus?: number;
  /** A vhost-user-vsock back end's Unix socket (it must be listening before the launch). */
  /** The guest CID is not a QEMU option here: the backend reports it (GET_CONFIG). */
  /** packed: the device offers the packed ring layout (QEMU's packed=on; virtio 1.2 2.8) when the back end does. */
  vhostUserVsock?: { socket: string; packed?: boolean };
  /** A virtiofsd (vhost-user-fs) socket and the tag the guest mounts; several: one device each, in order. */
  virtiofs?: VirtiofsDevice | readonly VirtiofsDevice[];
  /**
   * The console's Ctrl-C: false (default) passes it to the guest; true lets it end QEMU
   * (for a launch script run from a terminal; chardev stdio signal=on).
   */
  consoleSignals?: boolean;
  /** More QEMU arguments, appended last. */
  extraArgs?: string[];
  /** Called with every console chunk as it arrives (\r removed, terminal escapes kept). */
  onConsole?: (chunk: string) => void;
  /** Called with every complete console line (without the newline; terminal escape sequences such as SeaBIOS's screen clearing removed). */
  onLine?: (line: string) => void;
  /**
   * Copy the console to stderr, each line prefixed: true uses "[qemu <pid>] ", a string
   * is the prefix. Default: on when TSVIRTIO_QEMU_CONSOLE=1.
   */
  echo?: boolean | string;
  /** Kill QEMU (SIGKILL) after this many ms; the exit then says timedOut. Default: none. */
  timeoutMs?: number;
  /** The exit marker (default "tsvirtio-exit:"). */
  exitMarker?: string;
  /** The QEMU binary (default: qemu-system-x86_64 from PATH, or $TSVIRTIO_QEMU). */
  qemu?: string;
  /** Keep at most this many bytes of console output in memory (default 4 MiB; oldest dropped). */
  consoleLimit?: number;
  /**
   * microvm: a VM that can be saved and restored (appliance/run/vm-snapshot.ts). QEMU 7.2
   * will not save or load a VM with a vhost-user device, and virtio-mmio has no hotplug:
   * the machine gets ACPI and PCIe (acpi=on,pcie=on), one empty pcie-root-port per
   * vhost-user device and the devices' chardevs, but not the devices; the caller adds
   * them with QMP device_add (hotplugDevices()) once the VM runs. QMP listens on
   * `qmpSocket`; `incoming` is a saved state to start from (-incoming).
   */
  restorable?: { qmpSocket: string; incoming?: string };
}

/** A vhost-user-fs device: virtiofsd's socket and the tag the guest sees. */
export interface VirtiofsDevice {
  socket: string;
  tag: string;
  queueSize?: number;
  /** packed=on: QEMU masks it by the back end's features (Debian's virtiofsd 7.2 offers none: the rings stay split). */
  packed?: boolean;
}

/** The virtiofs option as a list. */
export function virtiofsDevices(v: QemuOptions['virtiofs']): readonly VirtiofsDevice[] {
  return v === undefined ? [] : 'socket' in v ? [v] : v;
}

export interface QemuExit {
  /**
   * The guest program's status from the exit marker; without a marker QEMU's exit code,
   * except null when QEMU died of a signal or the guest kernel panicked (a panic reboots,
   * and with -no-reboot QEMU then exits 0, which must not read as success).
   */
  status: number | null;
  /** The status printed in the exit marker, or null when there was no marker. */
  guestStatus: number | null;
  /** QEMU's own exit code (null when killed by a signal). */
  qemuCode: number | null;
  /** The signal that ended QEMU, if any. */
  signal: NodeJS.Signals | null;
  /** True when the console showed "Kernel panic - not syncing". */
  kernelPanic: boolean;
  /** True when the launcher killed QEMU because timeoutMs passed. */
  timedOut: boolean;
  /** True when stop() ended it. */
  stopped: boolean;
  /** Milliseconds from spawn to exit. */
  elapsedMs: number;
  /** QEMU's own stderr (its error messages), last 64 KiB. */
  stderr: string;
}

export interface QemuInstance {
  readonly pid: number;
  /** The full argument list QEMU was started with. */
  readonly args: readonly string[];
  /** Settles when QEMU has exited (never rejects). */
  readonly exited: Promise<QemuExit>;
  /** True until QEMU has exited. */
  readonly running: boolean;
  /** Console output so far, as lines (escape sequences removed; bounded by consoleLimit). */
  console(): string;
  /** Milliseconds since spawn. */
  elapsedMs(): number;
  /** Writes to the serial console (the guest's /dev/console input). */
  write(data: string | Uint8Array): void;
  /**
   * Resolves with the first console line (seen before or after the call) that contains
   * `pattern` (string) or matches it (RegExp); rejects on timeout or when QEMU exits first.
   */
  waitForLine(pattern: string | RegExp, timeoutMs: number): Promise<string>;
  /** Subscribes to console lines; returns an unsubscribe function. */
  onLine(fn: (line: string) => void): () => void;
  /** Ends QEMU: SIGTERM, then SIGKILL after graceMs (default 3000). Resolves when it is gone. */
  stop(graceMs?: number): Promise<QemuExit>;
}

/** Removes terminal control sequences (CSI "ESC [ ... letter" and two-byte "ESC x") from a line. */
export function stripTerminalEscapes(s: string): string {
  return s.includes('\x1b') ? s.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b[@-Z\\-_a-z]/g, '') : s;
}

/** Every QEMU still running, killed when this process exits so none is left behind. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

/** Finds qemu-system-x86_64, or throws a QemuError saying how to install it. */
export function findQemu(binary = process.env['TSVIRTIO_QEMU'] ?? QEMU_BINARY): string {
  const found = findOnPath(binary);
  if (found === null) throw new QemuError('ERR_QEMU_MISSING', `${binary} is not installed (not found in PATH); ${QEMU_INSTALL_HINT}`);
  return found;
}

/** The QEMU argument list for `opts` (exported for tests and for logging). */
export function qemuArgs(opts: QemuOptions): string[] {
  const mem = opts.memoryMiB ?? 1024;
  if (!Number.isInteger(mem) || mem < 64) throw new QemuError('ERR_QEMU_OPTIONS', `memoryMiB must be an integer >= 64, got ${mem}`);
  const cpus = opts.cpus ?? 1;
  const machine = opts.machine ?? 'q35';
  if (machine !== 'q35' && machine !== 'microvm') throw new QemuError('ERR_QEMU_OPTIONS', `machine must be q35 or microvm, got ${JSON.stringify(machine)}`);
  const common = ['-cpu', 'max', '-m', `${mem}M`, '-smp', String(cpus), '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`];
  const console = ['-nographic', '-nodefaults', '-no-reboot', '-chardev', `stdio,id=console,signal=${opts.consoleSignals ? 'on' : 'off'}`, '-serial', 'chardev:console'];
  let args: string[];
  const restorable = opts.restorable;
  if (restorable !== undefined && machine !== 'microvm') throw new QemuError('ERR_QEMU_OPTIONS', 'a restorable VM (saved and restored VM states) needs the microvm machine');
  if (machine === 'microvm') {
    if (opts.rootfs === undefined) throw new QemuError('ERR_QEMU_OPTIONS', 'the microvm machine boots from a root file system image: rootfs is missing');
    if (opts.initrd !== undefined) throw new QemuError('ERR_QEMU_OPTIONS', 'the microvm machine takes a rootfs, not an initrd');
    args = [
      // No ACPI: no tables to build or parse; the virtio-mmio devices reach the kernel as
      // virtio_mmio.device= parameters QEMU appends to the command line. A restorable VM
      // needs PCIe for hotplug, and microvm has PCIe only with ACPI (the root disk is then
      // an ACPI-described virtio-mmio device, LNRO0005).
      '-M', `microvm,${restorable ? 'acpi=on,pcie=on' : 'acpi=off'},memory-backend=mem`,
      ...common,
      '-global', 'virtio-mmio.force-legacy=false',
      '-kernel', opts.kernel,
      '-append', opts.append,
      ...console,
      '-drive', `id=root,file=${driveFile(opts.rootfs)},format=raw,if=none,readonly=on`,
      '-device', 'virtio-blk-device,drive=root',
    ];
  } else {
    if (opts.initrd === undefined) throw new QemuError('ERR_QEMU_OPTIONS', 'the q35 machine boots with an initramfs: initrd is missing');
    if (opts.rootfs !== undefined) throw new QemuError('ERR_QEMU_OPTIONS', 'the q35 machine takes an initrd, not a rootfs');
    args = ['-M', 'q35', ...common, '-machine', 'q35,memory-backend=mem', '-kernel', opts.kernel, '-initrd', opts.initrd, '-append', opts.append, ...console];
  }
  for (const d of vhostUserDevices(opts)) {
    args.push('-chardev', `socket,id=${d.chardev},path=${chardevPath(d.socket)}`);
    if (restorable) args.push('-device', `pcie-root-port,id=${d.port},chassis=${d.chassis},slot=0`);
    else args.push('-device', [machine === 'microvm' ? d.mmioDriver : d.pciDriver, `chardev=${d.chardev}`, ...Object.entries(d.props).map(([k, v]) => `${k}=${v}`)].join(','));
  }
  if (restorable) {
    args.push('-qmp', `unix:${chardevPath(restorable.qmpSocket)},server=on,wait=off`);
    if (restorable.incoming !== undefined) args.push('-incoming', `exec:cat ${shellQuote(restorable.incoming)}`);
  }
  args.push(...(opts.extraArgs ?? []));
  return args;
}

/** One vhost-user device of a launch: its chardev, its drivers, its properties, and (restorable VMs) its root port. */
interface VhostUserDevice {
  chardev: string;
  socket: string;
  mmioDriver: string;
  pciDriver: string;
  props: Record<string, string>;
  /** The pcie-root-port it is hotplugged into (restorable VMs). */
  port: string;
  chassis: number;
}

function vhostUserDevices(opts: QemuOptions): VhostUserDevice[] {
  const out: VhostUserDevice[] = [];
  const add = (d: Omit<VhostUserDevice, 'port' | 'chassis'>): void => {
    out.push({ ...d, port: `tsv-hp${out.length}`, chassis: out.length + 1 });
  };
  if (opts.vhostUserVsock) {
    const v = opts.vhostUserVsock;
    add({ chardev: 'vsock0', socket: v.socket, mmioDriver: 'vhost-user-vsock-device', pciDriver: 'vhost-user-vsock-pci', props: v.packed ? { packed: 'on' } : {} });
  }
  for (const [i, f] of virtiofsDevices(opts.virtiofs).entries()) {
    if (!/^[A-Za-z0-9_.-]+$/.test(f.tag)) throw new QemuError('ERR_QEMU_OPTIONS', `bad virtiofs tag: ${f.tag}`);
    const props: Record<string, string> = { tag: f.tag };
    if (f.queueSize) props['queue-size'] = String(f.queueSize);
    if (f.packed) props['packed'] = 'on';
    add({ chardev: `fs${i}`, socket: f.socket, mmioDriver: 'vhost-user-fs-device', pciDriver: 'vhost-user-fs-pci', props });
  }
  return out;
}

/**
 * The QMP device_add arguments that plug a restorable VM's vhost-user devices into their
 * root ports, in order (the vsock device first).
 */
export function hotplugDevices(opts: QemuOptions): Array<Record<string, string>> {
  return vhostUserDevices(opts).map((d) => ({ driver: d.pciDriver, id: d.chardev, chardev: d.chardev, bus: d.port, ...d.props }));
}

/** A word for /bin/sh (QEMU runs exec: migration URIs through it). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A path inside a QEMU option list: commas must be doubled. */
function chardevPath(p: string): string {
  return p.replace(/,/g, ',,');
}

/** A file inside -drive: commas doubled, as in chardevPath. */
const driveFile = chardevPath;

/** Starts QEMU. Throws (QemuError) when QEMU is missing or an input file does not exist. */
export function launchQemu(opts: QemuOptions): QemuInstance {
  const qemu = findQemu(opts.qemu);
  for (const [what, p] of [['kernel', opts.kernel], ['initrd', opts.initrd], ['rootfs', opts.rootfs]] as const) {
    if (p !== undefined && !existsSync(p)) throw new QemuError('ERR_QEMU_OPTIONS', `${what} not found: ${p}`);
  }
  for (const [what, p] of [['vhost-user-vsock socket', opts.vhostUserVsock?.socket], ...virtiofsDevices(opts.virtiofs).map((f) => ['virtiofs socket', f.socket] as const)] as const) {
    if (p !== undefined && !existsSync(p)) {
      throw new QemuError('ERR_QEMU_OPTIONS', `${what} ${p} does not exist: start the back end before QEMU (QEMU connects to it at startup)`);
    }
  }
  const args = qemuArgs(opts);
  const started = Date.now();
  // In its own process group: a terminal's Ctrl-C (SIGINT to the foreground group) reaches
  // our process only, which stops QEMU in order (before the vhost-user back ends go away);
  // a QEMU that got the SIGINT itself printed vhost-user errors while the daemon closed.
  const bound = boundToParent(qemu, args);
  const child = spawn(bound.command, bound.args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  if (child.pid === undefined) {
    throw new QemuError('ERR_QEMU_SPAWN', `could not start ${qemu}`);
  }
  const pid = child.pid;
  installExitHook();
  live.add(child);

  const marker = opts.exitMarker ?? DEFAULT_EXIT_MARKER;
  const limit = opts.consoleLimit ?? 4 << 20;
  const echoSetting = opts.echo ?? process.env['TSVIRTIO_QEMU_CONSOLE'] === '1';
  const prefix = echoSetting === false ? undefined : typeof echoSetting === 'string' ? echoSetting : `[qemu ${pid}] `;
  let consoleText = '';
  let partial = '';
  let guestStatus: number | null = null;
  let stderrText = '';
  let timedOut = false;
  let stopped = false;
  let kernelPanic = false;
  let running = true;
  const lines: string[] = []; // recent complete lines, for waitForLine on past output
  const lineListeners = new Set<(line: string) => void>();
  if (opts.onLine) lineListeners.add(opts.onLine);

  const onChunk = (raw: string): void => {
    const chunk = raw.replace(/\r/g, '');
    opts.onConsole?.(chunk);
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = stripTerminalEscapes(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
      // The guest's terminal echoes the resume line we wrote (vm-snapshot.ts): it carries
      // random bytes for the guest, which have no place in logs.
      if (line.startsWith(RESUME_PREFIX)) continue;
      consoleText += line + '\n';
      if (consoleText.length > limit) consoleText = consoleText.slice(consoleText.length - limit);
      lines.push(line);
      if (lines.length > 10000) lines.splice(0, lines.length - 10000);
      if (line.includes('Kernel panic - not syncing')) kernelPanic = true;
      const at = line.indexOf(marker);
      if (at >= 0) {
        const m = /^\s*(-?\d+)/.exec(line.slice(at + marker.length));
        if (m) guestStatus = Number(m[1]);
      }
      if (prefix !== undefined) process.stderr.write(`${prefix}${line}\n`);
      for (const fn of [...lineListeners]) fn(line);
    }
  };
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', onChunk);
  child.stderr!.setEncoding('utf8');
  // QEMU writes one message in pieces ("qemu-system-x86_64:", " ", the text): echo and
  // filter whole lines only (what is left at exit is echoed then).
  let stderrPartial = '';
  const echoStderr = (text: string): void => {
    // After stop() QEMU says "terminating on signal 15 from pid <ours>": expected, not echoed.
    const shown = stopped ? text.replace(/^qemu-system-[\w-]+: terminating on signal \d+ from pid \d+.*\n?/gm, '') : text;
    if (shown) process.stderr.write(shown.replace(/^(?=.)/gm, `[qemu ${pid} stderr] `));
  };
  child.stderr!.on('data', (s: string) => {
    stderrText += s;
    if (stderrText.length > 65536) stderrText = stderrText.slice(-65536);
    stderrPartial += s;
    const end = stderrPartial.lastIndexOf('\n');
    if (end < 0) return;
    echoStderr(stderrPartial.slice(0, end + 1));
    stderrPartial = stderrPartial.slice(end + 1);
  });
  child.stderr!.on('end', () => {
    if (stderrPartial) echoStderr(`${stderrPartial}\n`);
    stderrPartial = '';
  });
  child.stdin!.on('error', () => {
    /* QEMU gone: writes are dropped */
  });

  let timer: NodeJS.Timeout | undefined;
  if (opts.timeoutMs !== undefined) {
    timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    timer.unref();
  }

  const exited = new Promise<QemuExit>((resolveExit) => {
    child.on('close', (code, signal) => {
      running = false;
      live.delete(child);
      if (timer) clearTimeout(timer);
      if (partial) onChunk('\n');
      resolveExit({
        status: guestStatus ?? (kernelPanic ? null : code),
        guestStatus,
        kernelPanic,
        qemuCode: code,
        signal,
        timedOut,
        stopped,
        elapsedMs: Date.now() - started,
        stderr: stderrText,
      });
      for (const fn of [...lineListeners]) lineListeners.delete(fn);
    });
    child.on('error', (err) => {
      process.stderr.write(`[qemu ${pid}] ${err.message}\n`);
    });
  });

  const instance: QemuInstance = {
    pid,
    args,
    exited,
    get running() {
      return running;
    },
    console: () => consoleText + stripTerminalEscapes(partial),
    elapsedMs: () => Date.now() - started,
    write(data) {
      if (running) child.stdin!.write(data);
    },
    onLine(fn) {
      lineListeners.add(fn);
      return () => lineListeners.delete(fn);
    },
    waitForLine(pattern, timeoutMs) {
      const test = (l: string): boolean => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l));
      const past = lines.find(test);
      if (past !== undefined) return Promise.resolve(past);
      return new Promise<string>((resolveLine, reject) => {
        const t = setTimeout(() => {
          off();
          reject(new QemuError('ERR_QEMU_TIMEOUT', `no console line matching ${String(pattern)} within ${timeoutMs} ms (QEMU pid ${pid}); last output:\n${consoleText.slice(-2000)}`));
        }, timeoutMs);
        const off = instance.onLine((l) => {
          if (test(l)) {
            clearTimeout(t);
            off();
            resolveLine(l);
          }
        });
        void exited.then((e) => {
          clearTimeout(t);
          off();
          reject(new QemuError('ERR_QEMU_EXITED', `QEMU (pid ${pid}) exited (code ${e.qemuCode}, signal ${e.signal}) before a console line matched ${String(pattern)}; stderr: ${stderrText.trim() || '(empty)'}; last output:\n${consoleText.slice(-2000)}`));
        });
      });
    },
    async stop(graceMs = 3000) {
      if (!running) return exited;
      stopped = true;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const e = await exited;
      clearTimeout(t);
      return e;
    },
  };
  return instance;
}

/** QEMU's stderr is echoed with a prefix; this tells whether QEMU is installed without throwing. */
export function qemuAvailable(): boolean {
  try {
    findQemu();
    return true;
  } catch {
    return false;
  }
}
