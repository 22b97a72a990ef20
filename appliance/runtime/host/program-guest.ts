// What boots a user's program, for `tsvirtio run` and `tsvirtio build`: the runtime's
// bundles (launcher.ts; a V8 startup snapshot of it, shared by every program), the
// program's own bundle as /app/program.mjs, the loader, and the launcher's flags.
import { createHash } from 'node:crypto';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { cacheDir } from '../../image/debian.js';
import { type GuestProgram, ROOT } from '../../run/guest-image.js';
import { LOADER_PATH, PROGRAM_PATH, type TxModeName, dmaPagesFor, formatLauncherArgs } from '../launcher-args.js';
import { LOADER_SOURCE } from '../program-loader.js';
import { DEFAULT_POLL_WINDOW_MS } from '../../run/guest-defaults.js';

export const RUNTIME_BUNDLE = join(ROOT, 'dist', 'bundles', 'runtime.js');
/** The same launcher as one script, for the startup snapshot (build.mjs step 5). */
export const RUNTIME_SNAPSHOT_ENTRY = join(ROOT, 'dist', 'bundles', 'runtime.cjs');

export interface ProgramSpec {
  /** The program's source file (its path names the image). */
  app: string;
  /** Its bundle (bundleProgram). */
  bundle: string;
  /** Shared folders the program gets (virtio-fs devices to open). */
  shares: number;
  txMode: TxModeName;
  /** The program's own arguments (process.argv.slice(2) in the guest). */
  programArgs: string[];
}

/** A name for the program's image and bundle: its file name and a hash of its path. */
export function programName(app: string): string {
  const abs = resolve(app);
  const file = basename(abs).replace(/\.[^.]*$/, '');
  // examples/json-api/main.ts: "json-api-main".
  const named = file === 'main' || file === 'index' ? `${basename(dirname(abs))}-${file}` : file;
  const stem = named.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'program';
  return `program-${stem}-${createHash('sha256').update(abs).digest('hex').slice(0, 8)}`;
}

/** `app` relative to the working folder when it is inside it, else as it is (for messages). */
export function shownPath(app: string): string {
  const rel = relative(process.cwd(), app);
  return rel === '' || rel.startsWith('..') ? app : rel;
}

/** Where the program's bundle is written (under .cache/programs/). */
export function programBundlePath(app: string): string {
  return join(cacheDir('programs'), `${programName(app)}.mjs`);
}

export function programGuest(spec: ProgramSpec): GuestProgram {
  const dmaPages = dmaPagesFor(spec.shares);
  return {
    name: programName(spec.app),
    bundle: RUNTIME_BUNDLE,
    snapshotEntry: RUNTIME_SNAPSHOT_ENTRY,
    snapshotName: 'runtime',
    args: formatLauncherArgs({ shares: spec.shares, dmaPages, txMode: spec.txMode, pollWindowMs: DEFAULT_POLL_WINDOW_MS, programArgs: spec.programArgs }),
    files: [
      { guest: PROGRAM_PATH, host: spec.bundle, mode: 0o644 },
      { guest: LOADER_PATH, data: LOADER_SOURCE, mode: 0o644 },
    ],
    hugepages: dmaPages,
    nodeOptions: [],
  };
}
