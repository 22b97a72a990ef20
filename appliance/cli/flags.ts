// Reading a command's argv for `tsvirtio run` and `tsvirtio build`: flags as `--name
// value` or `--name=value`, positional arguments, and `--` after which everything
// belongs to the program. Parsed before anything is built (bin/tsvirtio.mjs transpiles
// these modules on the fly): no imports that need a build.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Machine } from '../image/guest.js';
import { TX_MODES } from '../run/guest-defaults.js';
import { DEFAULT_MACHINE } from '../run/machine-defaults.js';
import type { TxModeName } from '../runtime/launcher-args.js';

export class UsageError extends Error {
  readonly code = 'ERR_USAGE';
}

export interface FlagHandlers {
  /** A flag; `value()` takes its value (the `=` part or the next argument) or throws "FLAG: needs a value". */
  flag(name: string, value: () => string): void;
  positional(arg: string): void;
  /** The arguments after `--`. */
  rest(args: string[]): void;
}

export function readFlags(argv: readonly string[], h: FlagHandlers): void {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      h.rest(argv.slice(i + 1));
      return;
    }
    if (!arg.startsWith('-') || arg === '-') {
      h.positional(arg);
      continue;
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    h.flag(flag, () => {
      if (eq >= 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag}: needs a value`);
      return v;
    });
  }
}

/** QEMU's own floor; the image's real need is checked once it is built (run/guest-memory.ts). */
export const MIN_MEMORY_MIB = 64;

export function parseMemory(v: string, flag = '--memory'): number {
  if (!/^\d{1,6}$/.test(v) || Number(v) < MIN_MEMORY_MIB) throw new UsageError(`${flag}: expected MiB, at least ${MIN_MEMORY_MIB}, got ${JSON.stringify(v)}`);
  return Number(v);
}

export function parseMachineFlag(v: string, flag = '--machine'): Machine {
  if (v !== 'microvm' && v !== 'q35') throw new UsageError(`${flag}: expected microvm or q35, got ${JSON.stringify(v)}`);
  return v;
}

export function parseTxMode(v: string, flag = '--tx-mode'): TxModeName {
  if (!(TX_MODES as readonly string[]).includes(v)) throw new UsageError(`${flag}: expected one of ${TX_MODES.join(', ')}, got ${JSON.stringify(v)}`);
  return v as TxModeName;
}

/** A virtio-fs tag: 1..36 bytes (virtio 1.2, 5.11.4) of letters, digits, `_.-`. */
export const TAG_RE = /^[A-Za-z0-9_.-]{1,36}$/;

export function parseTag(v: string, flag: string): string {
  if (!TAG_RE.test(v)) throw new UsageError(`${flag}: bad tag ${JSON.stringify(v)} (1 to 36 of letters, digits, _ . -)`);
  return v;
}

/** A folder given as APP stands for the first of these in it. */
export const FOLDER_ENTRIES = ['main.ts', 'main.mts', 'main.js', 'main.mjs', 'index.ts', 'index.mts', 'index.js', 'index.mjs'];

/** The program file: JavaScript or TypeScript, or a folder with one of FOLDER_ENTRIES. */
export function parseApp(v: string, command: string): string {
  let app = resolve(v);
  const usage = `usage: tsvirtio ${command} APP${command === 'build' ? ' -o DIR' : ''}`;
  if (existsSync(app) && statSync(app).isDirectory()) {
    const entry = FOLDER_ENTRIES.map((f) => join(app, f)).find((f) => existsSync(f));
    if (entry === undefined) throw new UsageError(`APP: the folder ${app} has none of ${FOLDER_ENTRIES.join(', ')} (${usage})`);
    app = entry;
  }
  if (!/\.(?:[cm]?[jt]s|[jt]sx)$/.test(app)) throw new UsageError(`APP: expected a .js or .ts file (.mjs, .cjs, .mts, .cts, .jsx, .tsx) or a folder with a main.ts, got ${JSON.stringify(v)}`);
  if (!existsSync(app) || !statSync(app).isFile()) throw new UsageError(`APP: ${app} is not a file (${usage})`);
  return app;
}

/** node's ICU data in the microvm image (appliance/image/icu-data.ts): en or full. */
export type IcuFlag = 'en' | 'full';

export function parseIcuFlag(v: string, flag = '--icu'): IcuFlag {
  if (v !== 'en' && v !== 'full') throw new UsageError(`${flag}: expected en (English only, the default) or full (every locale and converter), got ${JSON.stringify(v)}`);
  return v;
}

/** What every command that boots a guest takes. */
export interface GuestCommandArgs {
  machine: Machine;
  /** microvm: node's ICU data (default en). */
  icu: IcuFlag;
  /** null: the machine's default. */
  memoryMiB: number | null;
  verbose: boolean;
  help: boolean;
}

/** --memory, --machine, --icu, --verbose, --help (-h) into `a`; false when `flag` is none of them. */
export function commonFlag(flag: string, value: () => string, a: GuestCommandArgs): boolean {
  switch (flag) {
    case '--memory':
      a.memoryMiB = parseMemory(value());
      return true;
    case '--machine':
      a.machine = parseMachineFlag(value());
      return true;
    case '--icu':
      a.icu = parseIcuFlag(value());
      return true;
    case '--verbose':
      a.verbose = true;
      return true;
    case '--help':
    case '-h':
      a.help = true;
      return true;
    default:
      return false;
  }
}

/** What `tsvirtio run` and `tsvirtio build` both take: `APP [flags] [-- ARGS]`. */
export interface ProgramCommandArgs extends GuestCommandArgs {
  /** The program's file (absolute); null only with --help. */
  app: string | null;
  /** The program's own arguments (after --). */
  programArgs: string[];
  txMode: TxModeName;
}

export function programCommandDefaults(): ProgramCommandArgs {
  return { app: null, programArgs: [], machine: DEFAULT_MACHINE, icu: 'en', memoryMiB: null, txMode: 'auto', verbose: false, help: false };
}

/**
 * Parses `APP [flags] [-- ARGS]` of `tsvirtio <command>` into `a`: the flags both
 * commands take here, the command's own ones by `own` (false: unknown flag). With
 * --help the rest is not checked; otherwise APP must be a JavaScript or TypeScript file.
 */
export function parseProgramCommand<T extends ProgramCommandArgs>(argv: readonly string[], a: T, command: string, own: (flag: string, value: () => string) => boolean): T {
  const positional: string[] = [];
  readFlags(argv, {
    flag(flag, value) {
      if (flag === '--tx-mode') a.txMode = parseTxMode(value());
      else if (!commonFlag(flag, value, a) && !own(flag, value)) throw new UsageError(`unknown flag ${JSON.stringify(flag)}`);
    },
    positional(arg) {
      if (positional.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(arg)} (the program's own arguments go after --)`);
      positional.push(arg);
    },
    rest(args) {
      a.programArgs = checkProgramArgs(args);
    },
  });
  if (a.help) return a;
  const app = positional[0];
  if (app === undefined) throw new UsageError(`APP: which program? (usage: tsvirtio ${command} APP${command === 'build' ? ' -o DIR' : ''})`);
  a.app = parseApp(app, command);
  return a;
}

/** At most 24 arguments fit the kernel command line; the launcher takes 5 of them (runtime/launcher-args.ts). */
export const MAX_PROGRAM_ARGS = 19;

/** The program's own arguments: they travel on the kernel command line (appliance/image/guest.ts initArgs). */
export function checkProgramArgs(args: readonly string[]): string[] {
  if (args.length > MAX_PROGRAM_ARGS) throw new UsageError(`the program's arguments: at most ${MAX_PROGRAM_ARGS} fit the kernel command line, got ${args.length}`);
  for (const a of args) {
    if (/["\n\r\0]/.test(a)) throw new UsageError(`the program's arguments: ${JSON.stringify(a)} cannot travel on the kernel command line (no double quote, newline or NUL)`);
  }
  return [...args];
}
