// The command line of `tsvirtio build APP -o DIR [flags]`: parsed before anything is
// built (bin/tsvirtio.mjs transpiles this module on the fly). No imports that need a
// build or pull in the runtime.
import { resolve } from 'node:path';
import { MAX_SHARES } from '../runtime/launcher-args.js';
import { type ProgramCommandArgs, UsageError, parseProgramCommand, parseTag, programCommandDefaults } from './flags.js';

export { UsageError } from './flags.js';

export const BUILD_USAGE = `usage: tsvirtio build APP -o DIR [--machine microvm|q35] [--icu en|full] [--memory MiB] [--tag TAG]...
                      [--tx-mode M] [--verbose] [--help] [-- ARGS]

Writes what boots APP (a .js or .ts file, as \`tsvirtio run\` runs it) with plain
qemu-system-x86_64 and any vhost-user-vsock back end: the kernel, the root file system
(microvm: rootfs.squashfs) or the initramfs (q35: initramfs.cpio), and launch.sh,
whose header says how to start the back ends and run it.

  -o, --out DIR   the folder to write (created; files of the same names replaced)
  --machine M     microvm (default) or q35
  --icu D         node's ICU data on microvm: en (default, English only) or full
                  (every locale, e.g. de-DE formatting; a 16 MB larger image)
  --memory MiB    guest RAM written into launch.sh (default 128 on microvm, 1024 on
                  q35); less than the image needs is refused, with what it needs
  --tag TAG       the program reads a shared folder with this virtio-fs tag:
                  launch.sh then takes one virtiofsd socket per tag, in this order;
                  repeatable
  --tx-mode M     auto (default), two-copy, single-copy, zero-copy
  --verbose       the build's steps and the image's progress
  --help          this text
  -- ARGS         the program's own arguments, fixed in the image (at most 19)
`;

export interface BuildArgs extends ProgramCommandArgs {
  /** The folder to write; null only with --help. */
  out: string | null;
  /** virtio-fs tags of the folders the program reads, in the order of launch.sh's sockets. */
  tags: string[];
}

export function parseBuildArgs(argv: readonly string[]): BuildArgs {
  const a: BuildArgs = { ...programCommandDefaults(), out: null, tags: [] };
  parseProgramCommand(argv, a, 'build', (flag, value) => {
    switch (flag) {
      case '-o':
      case '--out': {
        const v = value();
        if (v === '') throw new UsageError(`${flag}: empty path`);
        a.out = resolve(v);
        return true;
      }
      case '--tag': {
        const tag = parseTag(value(), '--tag');
        if (a.tags.includes(tag)) throw new UsageError(`--tag: ${JSON.stringify(tag)} is given twice`);
        if (a.tags.length === MAX_SHARES) throw new UsageError(`--tag: at most ${MAX_SHARES} shared folders`);
        a.tags.push(tag);
        return true;
      }
      default:
        return false;
    }
  });
  if (!a.help && a.out === null) throw new UsageError('-o DIR: where to write the image? (usage: tsvirtio build APP -o DIR)');
  return a;
}
