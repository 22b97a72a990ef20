// `tsvirtio build APP -o DIR` after the flags are parsed and the tree is built: bundles
// the program, builds its image as `tsvirtio run` would (the runtime's snapshot, the
// program, the addon, node; cached), and writes into DIR the kernel, the root file
// system (microvm) or initramfs (q35) and launch.sh (launch-script.ts). Resolves with
// the exit status: 0, or 1 with a message naming what failed.
import { chmodSync, copyFileSync, constants, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BuildArgs } from '../../cli/build-args.js';
import { buildGuestImage } from '../../run/guest-image.js';
import { memoryNeed } from '../../run/guest-memory.js';
import { DEFAULT_MEMORY_MIB } from '../../run/machine-defaults.js';
import { BundleError, bundleProgram } from './bundle-program.js';
import { OUTPUT_FILES, launchScript } from './launch-script.js';
import { programBundlePath, programGuest, shownPath } from './program-guest.js';

export const LAUNCH_SCRIPT = 'launch.sh';

export async function buildProgramCommand(args: BuildArgs): Promise<number> {
  const app = args.app!;
  const out = args.out!;
  const fail = (what: string): number => {
    process.stderr.write(`tsvirtio build: ${what}\n`);
    return 1;
  };
  const bundle = programBundlePath(app);
  try {
    await bundleProgram(app, bundle);
  } catch (e) {
    if (e instanceof BundleError) return fail(e.message);
    throw e;
  }
  const program = programGuest({ app, bundle, shares: args.tags.length, txMode: args.txMode, programArgs: args.programArgs });
  let image;
  try {
    image = await buildGuestImage(program, { machine: args.machine, icu: args.icu, progress: args.verbose ? (l) => process.stderr.write(`tsvirtio: ${l}\n`) : () => {} });
  } catch (e) {
    return fail(`cannot build the image: ${(e as Error).message}`);
  }
  const memoryMiB = args.memoryMiB ?? DEFAULT_MEMORY_MIB[args.machine];
  const need = memoryNeed(image, program.hugepages);
  if (memoryMiB < need.mib) return fail(`--memory ${memoryMiB} is too little for this image: it needs at least ${need.mib} MiB (${need.breakdown})`);

  const files = OUTPUT_FILES[args.machine];
  const written: string[] = [];
  try {
    mkdirSync(out, { recursive: true });
    const copy = (from: string, name: string): void => {
      const to = join(out, name);
      rmSync(to, { force: true }); // a hard link or a read-only copy from an earlier build
      copyFileSync(from, to, constants.COPYFILE_FICLONE);
      written.push(name);
    };
    copy(image.kernel, files.kernel);
    copy(image.machine === 'microvm' ? image.rootfs : image.initrd, files.root);
    const script = join(out, LAUNCH_SCRIPT);
    writeFileSync(script, launchScript({ app: shownPath(app), machine: args.machine, append: image.append, memoryMiB, tags: args.tags }));
    chmodSync(script, 0o755);
    written.push(LAUNCH_SCRIPT);
  } catch (e) {
    return fail(`cannot write ${out}: ${(e as Error).message}`);
  }
  process.stdout.write(`wrote ${written.map((n) => join(out, n)).join(', ')} (${args.machine}, ${(image.imageBytes / 1e6).toFixed(1)} MB, ${memoryMiB} MiB)\nrun: ${join(out, LAUNCH_SCRIPT)} VSOCK_SOCKET${args.tags.map((_, i) => ` FS_SOCKET_${i + 1}`).join('')}  (its header says how to start the back ends)\n`);
  return 0;
}
