#!/usr/bin/env bash
# Installs what the project needs on Debian 12 (run as root, or with sudo available):
# QEMU (TCG guests; it ships /usr/lib/qemu/virtiofsd), qemu-user, ab (apache2-utils) for the
# appliance benchmark, mksquashfs (squashfs-tools) for the microvm root file system,
# tshark to decode the vsock daemon's packet captures in tests, genrb (icu-devtools)
# for the microvm image's English-only ICU data,
# what building the microvm guest kernel needs (flex, bison, bc, libelf-dev; gcc and
# make come with the machine), then the npm packages (which also builds the native
# addon). The guest images and the kernel source are fetched later with
# `apt-get download` into .cache/: nothing to install for those.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-x86_64 >/dev/null 2>&1 || need+=(qemu-user)   # builds guest startup snapshots on the guests' CPU model (appliance/image/snapshot.ts)
command -v ab >/dev/null 2>&1 || need+=(apache2-utils)
command -v mksquashfs >/dev/null 2>&1 || need+=(squashfs-tools)
command -v tshark >/dev/null 2>&1 || need+=(tshark)   # decodes the daemon's packet captures in tests
command -v genrb >/dev/null 2>&1 || need+=(icu-devtools)   # res_index.res of the trimmed ICU data (appliance/image/icu-data.ts)
for tool in flex bison bc patch strip; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$( [ "$tool" = strip ] && echo binutils || echo "$tool")")
done
[ -e /usr/include/libelf.h ] || need+=(libelf-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
# Linux's vsock_test and the SEQPACKET test peer are linked statically from linux-source's
# tarball (tests/support/vsock-test-build.ts): libc.a and the uapi headers, and xz for tar.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/tsvirtio-apt.log 2>&1 \
    || { tail -20 /tmp/tsvirtio-apt.log; echo "setup: apt-get install ${need[*]} failed (log: /tmp/tsvirtio-apt.log)"; exit 1; }
fi
# apt-get download (the image builder) needs package lists.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock | grep -v partial)" ]; then $SUDO apt-get update -qq; fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
echo "setup: done"
