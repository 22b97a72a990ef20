// The microvm node guest's /init: a small static C program (init/tsvirtio-init.c) instead
// of a busybox shell script, and its configuration file. Under TCG, busybox's shell
// starting and forking itself for each mount cost 70-280 ms of the boot (measured: a C
// init's first line to the shell's first line), and busybox was 1.2 MB of the compressed
// image for nothing else.
//
//   const init = await buildGuestInit();          // .cache/init/tsvirtio-init-<key>.bin
//   files: [{ guest: GUEST_INIT_CONFIG, data: guestInitConfig({ program, args, env }) }]
//
// Built with the host's gcc, freestanding (its own system calls, no C library: a few KB
// where a static glibc is 680 KB), cached by the source's fingerprint and the flags.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pruneStale, reuseCached } from './cache-files.js';
import { ImageBuildError, cacheDir, repoRoot, run } from './debian.js';

/** Where the init reads its program, arguments and environment (see tsvirtio-init.c). */
export const GUEST_INIT_CONFIG = '/etc/tsvirtio-init.conf';

/** The C source, in the repository (like the kernel's configuration). */
export const GUEST_INIT_SOURCE = (): string => join(repoRoot(), 'appliance', 'image', 'init', 'tsvirtio-init.c');

const GCC_HINT = 'install gcc: npm run setup, or apt-get install -y gcc';
/** x86-64 only (its system calls are written out in the source). */
const GCC_FLAGS = ['-static', '-nostdlib', '-ffreestanding', '-fno-stack-protector', '-fno-builtin', '-fno-asynchronous-unwind-tables', '-Os', '-s', '-Wall', '-Wextra', '-Werror'];
const PRUNE_AGE_MS = 30 * 60 * 1000;

export interface GuestInit {
  /** The static binary, for the image's /init. */
  path: string;
  key: string;
  cached: boolean;
}

/** Compiles (or finds in .cache/init) the static init binary. */
export async function buildGuestInit(outDir = cacheDir('init')): Promise<GuestInit> {
  const source = GUEST_INIT_SOURCE();
  if (!existsSync(source)) throw new ImageBuildError('ERR_SPEC', `the guest init's source is missing: ${source}`);
  // Keyed by the source and the flags only: gcc runs on a cache miss, not on every start.
  const key = createHash('sha256').update(readFileSync(source)).update(GCC_FLAGS.join(' ')).digest('hex').slice(0, 16);
  const path = join(outDir, `tsvirtio-init-${key}.bin`);
  if (reuseCached(path)) return { path, key, cached: true };
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await run('gcc', [...GCC_FLAGS, '-o', tmp, source], { hint: GCC_HINT });
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    if (e instanceof ImageBuildError) throw new ImageBuildError(e.code, `building the guest init (${source}): ${e.message}`);
    throw e;
  }
  pruneStale(outDir, 'tsvirtio-init', 'bin', path, PRUNE_AGE_MS);
  return { path, key, cached: false };
}

export interface GuestInitConfig {
  /** Absolute path of the program in the guest. */
  program: string;
  /** Its arguments before those from the kernel command line (TSVIRTIO_ARG_N). */
  args: readonly string[];
  /** Environment beside PATH, HOME and TERM. */
  env?: Readonly<Record<string, string>>;
}

/** The text of GUEST_INIT_CONFIG; refuses what the init could not read back as written. */
export function guestInitConfig(c: GuestInitConfig): string {
  const bad = (what: string, v: string): never => {
    throw new ImageBuildError('ERR_SPEC', `guest init: ${what} ${JSON.stringify(v)} cannot be written to ${GUEST_INIT_CONFIG} (one line each, no newline or NUL)`);
  };
  if (!c.program.startsWith('/') || /[\n\0]/.test(c.program)) bad('program', c.program);
  const lines = [`program ${c.program}`];
  for (const a of c.args) {
    if (/[\n\0]/.test(a)) bad('argument', a);
    lines.push(`arg ${a}`);
  }
  for (const [k, v] of Object.entries(c.env ?? {})) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || /[\n\0]/.test(v)) bad('environment variable', `${k}=${v}`);
    lines.push(`env ${k}=${v}`);
  }
  if (c.args.length > 200 || Object.keys(c.env ?? {}).length > 200) bad('list', `${c.args.length} arguments, ${Object.keys(c.env ?? {}).length} variables`);
  return lines.join('\n') + '\n';
}
