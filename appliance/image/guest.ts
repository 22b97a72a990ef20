// What both guest images share: the kernel command line, busybox, and the image type
// the QEMU launcher takes.

import { join } from 'node:path';
import { fetchDebianKernel, fetchDebianPackage, ImageBuildError, type DebianKernel } from './debian.js';
import type { InitramfsImage } from './initramfs.js';
import type { GuestKernel } from './kernel-build.js';
import type { SquashfsImage } from './squashfs.js';

/**
 * The two QEMU machines a guest boots on:
 * - microvm: qboot, no PCI, no ACPI; virtio-mmio devices; our own kernel (kernel-build.ts)
 *   loaded through its PVH entry, the root file system a squashfs on a virtio-blk disk;
 *   the appliance's default (it boots in a fraction of q35's time, in 128 MiB);
 * - q35: SeaBIOS, PCI; Debian's cloud kernel with an initramfs; virtio PCI devices
 *   (for PCI-only setups, and the stock-Linux guest).
 */
export type Machine = 'microvm' | 'q35';
export const MACHINES: readonly Machine[] = ['microvm', 'q35'];

/** What QEMU needs to boot an image: `launchQemu({ ...bootOptions(image), ... })`. */
export interface BootOptions {
  machine: Machine;
  /** For `-kernel`: vmlinuz (q35) or an uncompressed vmlinux with a PVH note (microvm). */
  kernel: string;
  /** q35: the initramfs (uncompressed cpio) for `-initrd`. */
  initrd?: string;
  /** microvm: the root file system image for a read-only virtio-blk disk. */
  rootfs?: string;
  /** The kernel command line for `-append`. */
  append: string;
}

interface ImageBase extends BootOptions {
  /** `uname -r` in the guest. */
  kernelVersion: string;
  /** Bytes QEMU reads to boot it: the kernel plus the initramfs or the root file system. */
  imageBytes: number;
}

/** A q35 guest (Debian's kernel, an initramfs). */
export interface GuestImage extends ImageBase {
  machine: 'q35';
  initrd: string;
  /** Build details: size, cache key, whether it was cached, modules in load order. */
  initramfs: InitramfsImage;
  debianKernel: DebianKernel;
}

/** A microvm guest (our kernel, a squashfs root). */
export interface MicrovmGuestImage extends ImageBase {
  machine: 'microvm';
  rootfs: string;
  squashfs: SquashfsImage;
  guestKernel: GuestKernel;
}

export type AnyGuestImage = GuestImage | MicrovmGuestImage;

/** The launch options that boot `image`. */
export function bootOptions(image: AnyGuestImage): BootOptions {
  return image.machine === 'q35'
    ? { machine: 'q35', kernel: image.kernel, initrd: image.initrd, append: image.append }
    : { machine: 'microvm', kernel: image.kernel, rootfs: image.rootfs, append: image.append };
}

/** Parses a --machine value; the message names the flag. */
export function parseMachine(v: string, flag = '--machine'): Machine {
  if (!(MACHINES as readonly string[]).includes(v)) throw new ImageBuildError('ERR_SPEC', `${flag}: expected ${MACHINES.join(' or ')}, got ${JSON.stringify(v)}`);
  return v as Machine;
}

/**
 * Kernel parameters that keep a TCG boot quiet and short: serial console only, no
 * kernel log on the console below errors, reboot (= QEMU exit with -no-reboot) on
 * panic, no speculative-execution mitigations (they cost a lot under emulation), no
 * legacy probing the guest does not need.
 */
export const BASE_KERNEL_ARGS: readonly string[] = [
  'console=ttyS0',
  'quiet',
  'loglevel=3',
  'panic=-1',
  'oops=panic',
  'mitigations=off',
  'no_timer_check',
  'tsc=reliable',
  '8250.nr_uarts=1',
  'i8042.noaux',
  'i8042.nokbd',
  'i8042.nopnp',
  'cryptomgr.notests',
  'random.trust_cpu=on',
];

/** The kernel parameters that carry the program's arguments to /init: TSVIRTIO_ARG_0, _1, ... */
export const INIT_ARG_PREFIX = 'TSVIRTIO_ARG_';
/** The kernel hands init at most 32 environment variables (MAX_INIT_ENVS), two of them its own. */
export const MAX_INIT_ARGS = 24;

/**
 * Shell lines for /init that turn TSVIRTIO_ARG_0, _1, ... back into "$@" (in order, empty
 * ones kept) and remove them from the environment.
 */
export const COLLECT_INIT_ARGS = [
  'set --',
  'i=0',
  `while eval "[ -n \\"\\\${${INIT_ARG_PREFIX}$i+x}\\" ]"; do`,
  `  eval "set -- \\"\\$@\\" \\"\\$${INIT_ARG_PREFIX}$i\\"; unset ${INIT_ARG_PREFIX}$i"`,
  '  i=$((i + 1))',
  'done',
].join('\n');

/**
 * The program's arguments as kernel parameters, one environment variable of /init each
 * (an unknown `NAME=value` parameter without a dot becomes one). Not "--" and argv: on
 * microvm QEMU appends the virtio_mmio.device= parameters to the end of the command line,
 * where everything after "--" would hide them from the kernel. The kernel command line
 * has no escaping: an argument may hold spaces (it is then double-quoted) but no double
 * quote, newline or NUL, and the whole line must stay under 2048 bytes.
 */
export function initArgs(args: readonly string[]): string {
  if (args.length > MAX_INIT_ARGS) throw new ImageBuildError('ERR_SPEC', `${args.length} arguments cannot be passed on the kernel command line (at most ${MAX_INIT_ARGS})`);
  return args
    .map((a, i) => {
      if (/["\n\r\0]/.test(a)) throw new ImageBuildError('ERR_SPEC', `argument cannot be passed on the kernel command line: ${JSON.stringify(a)}`);
      return `${INIT_ARG_PREFIX}${i}=${a === '' || /\s/.test(a) ? `"${a}"` : a}`;
    })
    .join(' ');
}

/** Joins kernel parameters and checks the x86 command line limit (2048 bytes with the NUL). */
export function kernelCommandLine(params: readonly string[], args: readonly string[] = []): string {
  const line = [...params, initArgs(args)].filter(Boolean).join(' ');
  if (Buffer.byteLength(line) >= 2048) throw new ImageBuildError('ERR_SPEC', `kernel command line too long (${Buffer.byteLength(line)} bytes, limit 2047)`);
  return line;
}

/** The static busybox from Debian's busybox-static package. */
export async function fetchBusybox(): Promise<string> {
  const pkg = await fetchDebianPackage('busybox-static');
  return join(pkg.root, 'bin', 'busybox');
}

export { fetchDebianKernel };

/** Shell lines that mount what every guest needs. */
export const MOUNT_SCRIPT = `mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm`;

/**
 * The last lines of a busybox init script. busybox's stty sets the mode with TCSETSW,
 * which first waits until the serial port has sent all the console output (the kernel's
 * reboot does not wait, and QEMU sends only as fast as the host reads): without it, a
 * host that read late lost the end of the output. Then the guest ends (-no-reboot).
 */
export const POWER_OFF_SCRIPT = `stty -echo </dev/console 2>/dev/null
poweroff -f`;

/** Lines that load modules with insmod, reporting (not hiding) a failure. */
export function insmodScript(modules: readonly { name: string; guest: string }[]): string {
  return modules.map((m) => `insmod ${m.guest} || echo "tsvirtio-init: insmod ${m.name} failed" >&2`).join('\n');
}
