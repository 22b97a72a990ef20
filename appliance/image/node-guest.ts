// The node guest: the host's own node binary with its shared libraries, an init, and one
// JavaScript program run as `node /app/main.js <args>` (or started from a V8 startup
// snapshot, `node --snapshot-blob /app/main.blob -- <args>`). When node exits the
// guest prints `tsvirtio-exit: <status>` and powers off; the launcher turns that line
// into the exit status. Two machines (guest.ts, Machine):
//
//   microvm  our kernel (kernel-build.ts: uio_pdrv_genirq for the virtio-mmio devices,
//            virtio-blk + squashfs for the root, nothing else), the root file system a
//            squashfs image (squashfs.ts; node stripped), no initramfs, no modules, no
//            shell: /init is a small static C program (guest-init.ts);
//   q35      Debian's cloud kernel and an initramfs with uio + uio_pci_generic (and NOT
//            virtio_pci, so the virtio devices stay unbound for our TypeScript drivers),
//            busybox and an init script.
//
// Both mount hugetlbfs at /dev/hugepages for DMA memory and reserve `hugepages` 2 MiB
// pages on the kernel command line.

import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { fetchDebianKernel } from './debian.js';
import {
  BASE_KERNEL_ARGS,
  MOUNT_SCRIPT,
  POWER_OFF_SCRIPT,
  COLLECT_INIT_ARGS,
  fetchBusybox,
  insmodScript,
  kernelCommandLine,
  type AnyGuestImage,
  type GuestImage,
  type Machine,
  type MicrovmGuestImage,
} from './guest.js';
import { GUEST_INIT_CONFIG, buildGuestInit, guestInitConfig } from './guest-init.js';
import { buildInitramfs, type InitramfsFile } from './initramfs.js';
import { hostTscKhz } from './host-tsc.js';
import { checkIcuChoice, type IcuData, prepareIcuData } from './icu-data.js';
import { buildGuestKernel, type KernelBuildOptions } from './kernel-build.js';
import { buildSquashfs, type SquashfsCompression } from './squashfs.js';

/** Boot stage lines (kernel/guest/boot.ts prints the later ones): `tsvirtio-stage: <name> <seconds since the kernel started>`. */
export const STAGE_MARKER = 'tsvirtio-stage:';

/** The marker line the node guest prints last: `tsvirtio-exit: <status>`. */
export const EXIT_MARKER = 'tsvirtio-exit:';

export const NODE_GUEST_MODULES: readonly string[] = ['uio', 'uio_pci_generic'];

/** Where a startup snapshot goes in the guest. */
export const GUEST_SNAPSHOT_PATH = '/app/main.blob';

/**
 * Kernel parameters of the microvm guest (our kernel has no ACPI, PCI, input devices or
 * modules, so the q35 list's i8042 and module options do not apply):
 * - root on the virtio-blk disk QEMU adds (the only block device: /dev/vda);
 * - nolapic_timer: the local APIC timer's calibration waits ~100 jiffies, which took
 *   ~210 ms of a 0.6 s boot under TCG; the PIT serves as the (one-shot capable) tick;
 * - random.trust_cpu=on: RDRAND seeds the kernel's RNG at once (node's first
 *   getrandom would otherwise wait for entropy: 1.2 s under TCG).
 * buildNodeGuest adds tsc_early_khz= with the host's TSC rate (host-tsc.ts): the PIT
 * calibration fails under host load, and the guest then runs on a jiffies clock.
 */
export const MICROVM_KERNEL_ARGS: readonly string[] = [
  'console=ttyS0',
  'quiet',
  // Errors reach the console (the OOM killer's "Out of memory: Killed process" is one).
  'loglevel=4',
  'panic=-1',
  'oops=panic',
  'no_timer_check',
  'tsc=reliable',
  'nolapic_timer',
  'random.trust_cpu=on',
  // microvm with acpi=off has no ACPI tables: no search for them (and no "valid RSDP was
  // not found" error). A restorable guest has them (appliance/run/vm-snapshot.ts drops this).
  'acpi=off',
  // `reboot -f` ends QEMU (-no-reboot) at once by a triple fault; the default methods
  // took ~2.9 s before one worked.
  'reboot=t',
  'root=/dev/vda',
  'rootfstype=squashfs',
  'ro',
  'init=/init',
];

export interface NodeGuestOptions {
  /** The JavaScript file to run (e.g. an esbuild bundle); it becomes /app/main.js (not shipped with `snapshot`). */
  main: string;
  /** A V8 startup snapshot of the program (appliance/image/snapshot.ts): run instead of main.js. */
  snapshot?: string;
  /** Arguments for main.js (passed on the kernel command line; see initArgs). */
  args?: string[];
  /** Extra files (e.g. a native addon at /app/tsvirtio.node). */
  files?: InitramfsFile[];
  /** 2 MiB hugepages to reserve at boot (default 32 on q35, 8 on microvm). */
  hugepages?: number;
  /** q35: more modules to include and load. */
  modules?: string[];
  /** Extra kernel parameters. */
  kernelArgs?: string[];
  /** The node binary (default: the one running this code). */
  node?: string;
  /** Extra node options, e.g. ["--expose-gc"]. */
  nodeOptions?: string[];
  /** Image name in the cache (default "node-guest-<main>"). */
  name?: string;
  /** Default q35 (the microvm machine needs our kernel, built once: kernel-build.ts). */
  machine?: Machine;
  /** microvm: squashfs compression (default lz4). */
  compression?: SquashfsCompression;
  /** microvm: progress of a kernel build (and of the ICU data's, icu-data.ts). */
  kernelBuild?: KernelBuildOptions;
  /**
   * microvm: node's ICU data (icu-data.ts). Default `en`: English only, node's linked
   * 33 MB package emptied and a trimmed one in /usr/share/icu; `full`: node as it is.
   * q35 always has node as it is.
   */
  icu?: IcuData;
}

export const DEFAULT_HUGEPAGES: Record<Machine, number> = { q35: 32, microvm: 8 };

/** node's arguments before the program's own (which come from the kernel command line). */
function nodeArgs(nodeOptions: readonly string[], snapshot: boolean): string[] {
  for (const o of nodeOptions) if (!/^[A-Za-z0-9_=.,:/+-]+$/.test(o)) throw new Error(`unsupported node option: ${o}`);
  // From a snapshot, arguments after `--` reach the program (node would read them as its own otherwise).
  return snapshot ? [...nodeOptions, '--snapshot-blob', GUEST_SNAPSHOT_PATH, '--'] : [...nodeOptions, '/app/main.js'];
}

function nodeCommand(nodeOptions: readonly string[], snapshot: boolean): string {
  return ['/usr/bin/node', ...nodeArgs(nodeOptions, snapshot), '"$@"'].join(' ');
}

/** A shell line printing a boot stage marker with the kernel's uptime (/proc must be mounted). */
function stageLine(name: string): string {
  return `read up _ < /proc/uptime\necho "${STAGE_MARKER} ${name} $up"`;
}

/** The end of the q35 init script: run the program, print its exit status, end the guest. */
function runProgram(command: string): string {
  return `cd /app
${stageLine('exec')}
${command}
status=$?
echo "${EXIT_MARKER} $status"
${POWER_OFF_SCRIPT}`;
}

function q35Init(modules: readonly { name: string; guest: string }[], command: string): string {
  return `#!/bin/busybox sh
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root TERM=dumb
${COLLECT_INIT_ARGS}
${MOUNT_SCRIPT}
${stageLine('init')}
mkdir -p /dev/hugepages
mount -t hugetlbfs -o pagesize=2M hugetlbfs /dev/hugepages
${insmodScript(modules)}
${runProgram(command)}
`;
}

/**
 * The microvm init's configuration (guest-init.ts; the init is a static C program, not a
 * shell script: it mounts /proc, /sys, /tmp, /dev/hugepages and /dev/shm, prints the
 * stage markers, runs node in /app with the program's arguments from the kernel command
 * line, prints the exit line and reboots, which ends QEMU).
 */
function microvmInitConfig(nodeOptions: readonly string[], snapshot: boolean, env: Readonly<Record<string, string>>): string {
  return guestInitConfig({ program: '/usr/bin/node', args: nodeArgs(nodeOptions, snapshot), env });
}

/** Builds (or finds cached) the node guest image for one JavaScript file. */
export function buildNodeGuest(opts: NodeGuestOptions & { machine: 'microvm' }): Promise<MicrovmGuestImage>;
export function buildNodeGuest(opts: NodeGuestOptions & { machine?: 'q35' }): Promise<GuestImage>;
export function buildNodeGuest(opts: NodeGuestOptions): Promise<AnyGuestImage>;
export async function buildNodeGuest(opts: NodeGuestOptions): Promise<AnyGuestImage> {
  const machine = opts.machine ?? 'q35';
  const name = opts.name ?? `node-guest-${basename(opts.main).replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  const snapshot = opts.snapshot !== undefined;
  // From a snapshot node never reads main.js (the snapshot holds the program): not shipped.
  const files: InitramfsFile[] =
    opts.snapshot === undefined
      ? [{ guest: '/app/main.js', host: opts.main, mode: 0o644 }, ...(opts.files ?? [])]
      : [...(opts.files ?? []), { guest: GUEST_SNAPSHOT_PATH, host: opts.snapshot, mode: 0o644 }];
  const hugepages = `hugepages=${opts.hugepages ?? DEFAULT_HUGEPAGES[machine]}`;

  if (machine === 'microvm') {
    const [kernel, init, tscKhz, icu] = await Promise.all([
      buildGuestKernel(opts.kernelBuild),
      buildGuestInit(),
      hostTscKhz(),
      prepareIcuData({ node: opts.node ?? process.execPath, icu: checkIcuChoice(opts.icu ?? 'en', `image ${name}`), ...(opts.kernelBuild?.progress ? { progress: opts.kernelBuild.progress } : {}) }),
    ]);
    const squashfs = await buildSquashfs({
      name: `${name}-microvm`,
      executables: [{ host: icu.node, guest: '/usr/bin/node', strip: icu.strip }],
      directories: [{ guest: '/app' }, { guest: '/mnt' }],
      files: [
        ...files,
        ...(icu.dataFile ? [{ guest: icu.dataFile.guest, host: icu.dataFile.host, mode: 0o644 }] : []),
        { guest: GUEST_INIT_CONFIG, data: microvmInitConfig(opts.nodeOptions ?? [], snapshot, icu.env), mode: 0o644 },
      ],
      init: readFileSync(init.path),
      ...(opts.compression ? { compression: opts.compression } : {}),
    });
    return {
      machine,
      kernel: kernel.image,
      rootfs: squashfs.path,
      append: kernelCommandLine([...MICROVM_KERNEL_ARGS, hugepages, ...(tscKhz ? [`tsc_early_khz=${tscKhz}`] : []), ...(opts.kernelArgs ?? [])], opts.args ?? []),
      kernelVersion: kernel.release,
      imageBytes: statSync(kernel.image).size + squashfs.size,
      squashfs,
      guestKernel: kernel,
    };
  }

  const command = nodeCommand(opts.nodeOptions ?? [], snapshot);
  const [kernel, busybox] = await Promise.all([fetchDebianKernel(), fetchBusybox()]);
  const initramfs = await buildInitramfs({
    name,
    kernel,
    busybox,
    modules: [...NODE_GUEST_MODULES, ...(opts.modules ?? [])],
    executables: [{ host: opts.node ?? process.execPath, guest: '/usr/bin/node' }],
    files,
    init: (ctx) => q35Init(ctx.modules, command),
  });
  return {
    machine,
    kernel: kernel.vmlinuz,
    initrd: initramfs.path,
    append: kernelCommandLine([...BASE_KERNEL_ARGS, hugepages, ...(opts.kernelArgs ?? [])], opts.args ?? []),
    kernelVersion: kernel.version,
    imageBytes: statSync(kernel.vmlinuz).size + initramfs.size,
    initramfs,
    debianKernel: kernel,
  };
}
