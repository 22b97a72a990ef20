// launch.sh of `tsvirtio build`: boots the written image with plain qemu-system-x86_64
// against vhost-user back ends the user starts (any vhost-user-vsock: ours or
// vhost-device-vsock; one virtiofsd per shared folder). QEMU's arguments are the
// launcher's own (appliance/qemu/launch.ts qemuArgs), with the files and sockets as
// shell variables.
import type { BootOptions, Machine } from '../../image/guest.js';
import { qemuArgs } from '../../qemu/launch.js';

/** The image's files in the output folder, by machine. */
export const OUTPUT_FILES: Record<Machine, { kernel: string; root: string }> = {
  microvm: { kernel: 'vmlinux', root: 'rootfs.squashfs' },
  q35: { kernel: 'vmlinuz', root: 'initramfs.cpio' },
};

export interface LaunchScriptSpec {
  /** What was built (for the header). */
  app: string;
  machine: Machine;
  /** The kernel command line of the image. */
  append: string;
  memoryMiB: number;
  /** The virtio-fs tags the program reads, in the order of their sockets. */
  tags: readonly string[];
}

/** A word for sh: literal parts single-quoted, @NAME@ placeholders as "${name}". */
function shellWord(arg: string, vars: Record<string, string>): string {
  return arg
    .split(/(@[A-Z0-9]+@)/)
    .filter((part) => part !== '')
    .map((part) => {
      const v = /^@([A-Z0-9]+)@$/.exec(part);
      if (v && vars[v[1]!] !== undefined) return `"${vars[v[1]!]}"`;
      return /^[A-Za-z0-9_=.,:/+-]+$/.test(part) ? part : `'${part.replace(/'/g, `'\\''`)}'`;
    })
    .join('');
}

export function launchScript(spec: LaunchScriptSpec): string {
  const files = OUTPUT_FILES[spec.machine];
  // The host's TSC rate is this machine's, not the one the script runs on: left to TSVIRTIO_TSC_KHZ.
  const append = spec.append.replace(/ ?\btsc_early_khz=\d+/, '');
  const boot: BootOptions = spec.machine === 'microvm' ? { machine: 'microvm', kernel: '@KERNEL@', rootfs: '@ROOT@', append: '@APPEND@' } : { machine: 'q35', kernel: '@KERNEL@', initrd: '@ROOT@', append: '@APPEND@' };
  const args = qemuArgs({
    ...boot,
    memoryMiB: spec.memoryMiB,
    vhostUserVsock: { socket: '@VSOCK@' },
    virtiofs: spec.tags.map((tag, i) => ({ socket: `@FS${i}@`, tag })),
    consoleSignals: true,
  });
  // Placeholders in QEMU's arguments -> shell variables.
  const vars: Record<string, string> = {
    KERNEL: `$here/${files.kernel}`,
    ROOT: `$here/${files.root}`,
    VSOCK: '$vsock',
    APPEND: '$append',
    ...Object.fromEntries(spec.tags.map((_, i) => [`FS${i}`, `$fs${i}`])),
  };
  // One QEMU option (and its value) a line.
  const lines: string[] = [];
  for (const a of args) {
    const w = shellWord(a, vars);
    if (a.startsWith('-') || lines.length === 0) lines.push(w);
    else lines[lines.length - 1] += ` ${w}`;
  }
  const fsUsage = spec.tags.map((_, i) => `FS_SOCKET_${i + 1}`).join(' ');
  const fsLines = spec.tags.map((t, i) => `#   FS_SOCKET_${i + 1}${' '.repeat(Math.max(1, 14 - String(i + 1).length))}virtiofsd's socket for the shared folder tagged "${t}"`);
  const fsVars = spec.tags.flatMap((_, i) => [`fs${i}=\${${i + 2}:-}`, `need_socket "$fs${i}" 'virtiofsd socket ${i + 1} (tag ${spec.tags[i]})'`]);
  return `#!/bin/sh
# Boots ${spec.app} (written by \`tsvirtio build\`): a ${spec.machine} guest, ${spec.memoryMiB} MiB,
# kernel ${files.kernel}, ${spec.machine === 'microvm' ? `root file system ${files.root} (read-only virtio-blk disk)` : `initramfs ${files.root}`}.
#
# usage: ./launch.sh VSOCK_SOCKET${fsUsage ? ` ${fsUsage}` : ''}
#    or: TSVIRTIO_VSOCK_SOCKET=... ${spec.tags.length ? 'TSVIRTIO_FS_SOCKETS="..." ' : ''}./launch.sh
#
#   VSOCK_SOCKET    the Unix socket of a vhost-user-vsock back end, listening before this
#                   starts (QEMU connects to it at once); the back end gives the guest its
#                   CID. Ours (from this repository):
#                     npx vhost-user-vsock --vm guest-cid=3,socket=/tmp/app.vhost,uds-path=/tmp/app.vsock \\
#                                          --forward 127.0.0.1:8080=3:80
#                   (TCP 127.0.0.1:8080 -> the program's vsock port 80; host programs can also
#                   connect through /tmp/app.vsock: write "CONNECT 80\\n", read "OK ...").
#                   Or rust-vmm's: vhost-device-vsock --vm guest-cid=3,socket=/tmp/app.vhost,uds-path=/tmp/app.vsock
${fsLines.length ? `${fsLines.join('\n')}\n#                   (/usr/lib/qemu/virtiofsd --socket-path=S -o source=DIR -o sandbox=chroot;\n#                   the program only reads it; TSVIRTIO_FS_SOCKETS: the sockets, space-separated)\n` : ''}#
# Environment: QEMU (default qemu-system-x86_64), QEMU_EXTRA_ARGS (appended, e.g.
# "-accel kvm"), TSVIRTIO_TSC_KHZ (microvm: the host's TSC rate, kernel tsc_early_khz=).
#
# The console is this terminal: the program's output, and "tsvirtio-exit: N" with its
# exit status when it ends (then QEMU exits). Ctrl-C ends QEMU.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -eq 0 ]; then
  # shellcheck disable=SC2086
  set -- "\${TSVIRTIO_VSOCK_SOCKET:-}" \${TSVIRTIO_FS_SOCKETS:-}
fi
need_socket() {
  if [ -z "$1" ]; then
    echo "launch.sh: $2 missing (usage: $0 VSOCK_SOCKET${fsUsage ? ` ${fsUsage}` : ''})" >&2
    exit 2
  fi
  if [ ! -S "$1" ]; then
    echo "launch.sh: $2 $1 is not a socket: start the back end first" >&2
    exit 2
  fi
}
vsock=\${1:-}
need_socket "$vsock" 'vhost-user-vsock socket'
${fsVars.join('\n')}${fsVars.length ? '\n' : ''}append=${shellWord(append, {})}
if [ -n "\${TSVIRTIO_TSC_KHZ:-}" ]; then append="$append tsc_early_khz=$TSVIRTIO_TSC_KHZ"; fi
# shellcheck disable=SC2086
exec "\${QEMU:-qemu-system-x86_64}" \\
${lines.map((l) => `  ${l} \\\n`).join('')}  \${QEMU_EXTRA_ARGS:-}
`;
}
