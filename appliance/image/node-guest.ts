// The appliance guest: Debian's cloud kernel, busybox, the host's own node binary with
// its shared libraries, uio + uio_pci_generic (and NOT virtio_pci, so the virtio devices
// stay unbound for our TypeScript drivers), hugetlbfs at /dev/hugepages, and one
// JavaScript file run as `node /app/main.js <args>`. When node exits the guest prints
// `tsvirtio-exit: <status>` and powers off; the launcher turns that line into the exit
// status.

import { basename } from 'node:path';
import { fetchDebianKernel } from './debian.js';
import { BASE_KERNEL_ARGS, MOUNT_SCRIPT, SKIP_TO_INIT_ARGS, fetchBusybox, insmodScript, kernelCommandLine, type GuestImage } from './guest.js';
import { buildInitramfs, type InitramfsFile } from './initramfs.js';

/** The marker line the node guest prints last: `tsvirtio-exit: <status>`. */
export const EXIT_MARKER = 'tsvirtio-exit:';

export const NODE_GUEST_MODULES: readonly string[] = ['uio', 'uio_pci_generic'];

export interface NodeGuestOptions {
  /** The JavaScript file to run (e.g. an esbuild bundle); it becomes /app/main.js. */
  main: string;
  /** Arguments for main.js (passed on the kernel command line; see initArgs). */
  args?: string[];
  /** Extra files (e.g. a native addon at /app/tsvirtio.node). */
  files?: InitramfsFile[];
  /** 2 MiB hugepages to reserve at boot (default 32). */
  hugepages?: number;
  /** More modules to include and load. */
  modules?: string[];
  /** Extra kernel parameters. */
  kernelArgs?: string[];
  /** The node binary (default: the one running this code). */
  node?: string;
  /** Extra node options, e.g. ["--expose-gc"]. */
  nodeOptions?: string[];
  /** Image name in the cache (default "node-guest"). */
  name?: string;
}

function nodeInit(modules: readonly { name: string; guest: string }[], nodeOptions: readonly string[]): string {
  for (const o of nodeOptions) if (!/^[A-Za-z0-9_=.,:/+-]+$/.test(o)) throw new Error(`unsupported node option: ${o}`);
  return `#!/bin/busybox sh
export PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin HOME=/root TERM=dumb
${SKIP_TO_INIT_ARGS}
${MOUNT_SCRIPT}
mkdir -p /dev/hugepages
mount -t hugetlbfs -o pagesize=2M hugetlbfs /dev/hugepages
${insmodScript(modules)}
cd /app
/usr/bin/node ${nodeOptions.join(' ')} /app/main.js "$@"
status=$?
echo "${EXIT_MARKER} $status"
poweroff -f
`;
}

/** Builds (or finds cached) the node guest image for one JavaScript file. */
export async function buildNodeGuest(opts: NodeGuestOptions): Promise<GuestImage> {
  const [kernel, busybox] = await Promise.all([fetchDebianKernel(), fetchBusybox()]);
  const nodeOptions = opts.nodeOptions ?? [];
  const initramfs = await buildInitramfs({
    name: opts.name ?? `node-guest-${basename(opts.main).replace(/[^A-Za-z0-9_.-]/g, '_')}`,
    kernel,
    busybox,
    modules: [...NODE_GUEST_MODULES, ...(opts.modules ?? [])],
    executables: [{ host: opts.node ?? process.execPath, guest: '/usr/bin/node' }],
    files: [{ guest: '/app/main.js', host: opts.main, mode: 0o644 }, ...(opts.files ?? [])],
    init: (ctx) => nodeInit(ctx.modules, nodeOptions),
  });
  return {
    kernel: kernel.vmlinuz,
    initrd: initramfs.path,
    append: kernelCommandLine([...BASE_KERNEL_ARGS, `hugepages=${opts.hugepages ?? 32}`, ...(opts.kernelArgs ?? [])], opts.args ?? []),
    kernelVersion: kernel.version,
    initramfs,
    debianKernel: kernel,
  };
}
