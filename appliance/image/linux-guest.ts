// The stock-Linux guest: Debian's cloud kernel with its own virtio_pci, virtio-vsock and
// virtiofs drivers, busybox and socat, and a shell on the serial console for a test
// harness (appliance/qemu/guest-shell.ts) to drive. Used to test our vsock emulator
// against Linux's driver and as the baseline in benchmarks.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import { fetchDebianKernel, fetchDebianPackageWithLibraries, libraryDirs } from './debian.js';
import { BASE_KERNEL_ARGS, MOUNT_SCRIPT, POWER_OFF_SCRIPT, fetchBusybox, insmodScript, kernelCommandLine, type GuestImage } from './guest.js';
import { buildInitramfs, type InitramfsFile } from './initramfs.js';

/** The line the guest prints when its shell is about to read commands. */
export const LINUX_GUEST_READY = 'tsvirtio-shell-ready';

/** Modules loaded at boot: the PCI transport, vsock over virtio, virtiofs (fuse comes as a dependency). */
export const LINUX_GUEST_MODULES: readonly string[] = ['virtio_pci', 'vmw_vsock_virtio_transport', 'virtiofs'];

export interface LinuxGuestOptions {
  /** More modules to include and load (dependencies are added). */
  modules?: string[];
  /** Extra files in the image. */
  files?: InitramfsFile[];
  /** Extra kernel parameters. */
  kernelArgs?: string[];
  /** Image name in the cache (default "linux-guest"). */
  name?: string;
}

/**
 * The init script. The shell is non-interactive and reads commands through a pipe
 * from the console, with the tty's echo off: no prompt, no line editing, no echo, so
 * the console carries only what commands print. The pipe is fed by `dd`, not `cat`:
 * busybox cat copies with sendfile(), and from a tty that delivered each line only when
 * the next one arrived. A command line with a syntax error
 * would end a non-interactive shell, so GuestShell runs each command in its own
 * `sh -c`. `poweroff -f` ends the guest; after "exit" the pipe's `dd` waits for one
 * more line before the guest powers off.
 */
function linuxInit(modules: readonly { name: string; guest: string }[]): string {
  return `#!/bin/busybox sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
${MOUNT_SCRIPT}
${insmodScript(modules)}
hostname tsvirtio-linux
stty -echo -onlcr 2>/dev/null
cd /root
echo "${LINUX_GUEST_READY}"
dd if=/dev/console bs=4096 2>/dev/null | sh
echo "tsvirtio-shell-exit"
${POWER_OFF_SCRIPT}
`;
}

/** Builds (or finds cached) the stock-Linux guest image. */
export async function buildLinuxGuest(opts: LinuxGuestOptions = {}): Promise<GuestImage> {
  const [kernel, busybox, socatPkgs] = await Promise.all([fetchDebianKernel(), fetchBusybox(), fetchDebianPackageWithLibraries('socat')]);
  const socat = join(socatPkgs[0]!.root, 'usr', 'bin', 'socat');
  const initramfs = await buildInitramfs({
    name: opts.name ?? 'linux-guest',
    kernel,
    busybox,
    modules: [...LINUX_GUEST_MODULES, ...(opts.modules ?? [])],
    executables: [
      {
        host: socat,
        guest: '/usr/bin/socat',
        libraryPath: libraryDirs(socatPkgs),
        libraryRoots: socatPkgs.map((p) => p.root),
      },
    ],
    files: opts.files ?? [],
    init: (ctx) => linuxInit(ctx.modules),
  });
  return {
    machine: 'q35',
    kernel: kernel.vmlinuz,
    initrd: initramfs.path,
    imageBytes: statSync(kernel.vmlinuz).size + initramfs.size,
    append: kernelCommandLine([...BASE_KERNEL_ARGS, ...(opts.kernelArgs ?? [])]),
    kernelVersion: kernel.version,
    initramfs,
    debianKernel: kernel,
  };
}
