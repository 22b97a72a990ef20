// The image of one guest program: the program's ESM bundle as /app/main.js (or a V8
// startup snapshot of its script bundle), the native addon, extra files, on either
// machine. Shared by `tsvirtio start` (the webserver appliance), `tsvirtio run` and
// `tsvirtio build` (a user's program behind the runtime, appliance/runtime/).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AnyGuestImage, Machine } from '../image/guest.js';
import type { IcuData } from '../image/icu-data.js';
import type { InitramfsFile } from '../image/initramfs.js';
import { buildNodeGuest } from '../image/node-guest.js';
import { buildStartupSnapshot } from '../image/snapshot.js';
import type { SquashfsCompression } from '../image/squashfs.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const ADDON = join(ROOT, 'build', 'Release', 'tsvirtio.node');

/** A program to boot: what goes into its image and onto the kernel command line. */
export interface GuestProgram {
  /** Image and snapshot name in the cache (letters, digits, `_.-`). */
  name: string;
  /** The ESM bundle, /app/main.js. */
  bundle: string;
  /** Its script bundle for a V8 startup snapshot (build.mjs step 5); absent: node runs the ESM bundle. */
  snapshotEntry?: string;
  /** The snapshot's name in the cache (default `name`): programs that share a script share it. */
  snapshotName?: string;
  /** The program's arguments (kernel command line, at most 24). */
  args: string[];
  /** Files besides main.js and the addon (/app/tsvirtio.node). */
  files?: InitramfsFile[];
  /** 2 MiB hugepages the image reserves (the program's DMA memory). */
  hugepages: number;
  /** q35: kernel modules to load. */
  modules?: string[];
  /** Options of the guest's node (a snapshot is built with the same ones). */
  nodeOptions: string[];
}

export interface GuestImageOptions {
  machine: Machine;
  /** microvm: root file system compression (default lz4). */
  compression?: SquashfsCompression;
  /** microvm: node's ICU data, en (default) or full (appliance/image/icu-data.ts). */
  icu?: IcuData;
  /** Progress lines (a kernel build prints its steps). */
  progress?: (line: string) => void;
}

/** What is missing to build the image of `program` ("... is missing: run node build.mjs"), or null. */
export function missingInputs(program: GuestProgram): string | null {
  if (!existsSync(program.bundle)) return `guest bundle ${program.bundle} is missing: run node build.mjs`;
  if (program.snapshotEntry !== undefined && !existsSync(program.snapshotEntry)) return `guest bundle ${program.snapshotEntry} is missing: run node build.mjs`;
  if (!existsSync(ADDON)) return `native addon ${ADDON} is missing: run node build.mjs`;
  return null;
}

/** Builds (or finds in the cache) the image of `program`. */
export async function buildGuestImage(program: GuestProgram, opts: GuestImageOptions): Promise<AnyGuestImage> {
  const progress = opts.progress ?? (() => {});
  // The snapshot holds the node options it was built with: the guest's node must get the
  // same. It is built on the guests' CPU model (QEMU's -cpu max; snapshot.ts says why).
  const snapshot =
    program.snapshotEntry !== undefined
      ? await buildStartupSnapshot({ entry: program.snapshotEntry, name: program.snapshotName ?? program.name, nodeOptions: program.nodeOptions, builderCpu: 'qemu-max' })
      : undefined;
  return buildNodeGuest({
    machine: opts.machine,
    main: program.bundle,
    ...(snapshot ? { snapshot: snapshot.path } : {}),
    name: program.name,
    args: program.args,
    // The addon without its symbol tables (0.03 MB; node loads it by its dynamic symbols).
    files: [{ guest: '/app/tsvirtio.node', host: ADDON, strip: true }, ...(program.files ?? [])],
    hugepages: program.hugepages,
    modules: program.modules ?? [],
    nodeOptions: program.nodeOptions,
    ...(opts.compression ? { compression: opts.compression } : {}),
    ...(opts.icu ? { icu: opts.icu } : {}),
    kernelBuild: { progress },
  });
}

/** True when every part of `image` came from the cache. */
export function imageWasCached(image: AnyGuestImage): boolean {
  return image.machine === 'q35' ? image.initramfs.cached : image.squashfs.cached && image.guestKernel.cached;
}
