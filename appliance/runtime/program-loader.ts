// Loads the user's program (an ESM bundle, /app/program.mjs) into the running runtime
// and runs it to its exit status.
//
// The runtime may have started from a V8 startup snapshot: its script has no module
// loader (import() fails with ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), so the program is
// imported by a two-line CommonJS file (LOADER_SOURCE, /app/load-program.cjs) loaded
// with createRequire(): code compiled by Node's CommonJS loader has import(). The same
// path serves the runtime's ESM bundle. The program's top level thus runs in the
// guest, after the devices are up, never while the snapshot is built.
//
// Exit status: a default export that is a function is the program's main; the status is
// what it returns (a number 0..255; nothing: process.exitCode or 0), a rejection is a
// panic (status 70, kernel/guest/boot.ts). Without one the program runs until it calls
// exit() (a server: until the guest is stopped).

/** The loader's source; the image holds it as /app/load-program.cjs. */
export const LOADER_SOURCE = `'use strict';
// Written by tsvirtio (appliance/runtime/program-loader.ts): import() for a runtime started from a startup snapshot.
module.exports = (path) => import(require('node:url').pathToFileURL(path).href);
`;

export type ProgramModule = Record<string, unknown>;

/** Imports the ESM file `programPath` through the CommonJS loader at `loaderPath`. */
export async function importProgram(programPath: string, loaderPath: string): Promise<ProgramModule> {
  // node:module is not vetted for snapshots: imported when used (a require() in the script bundle).
  const { createRequire } = await import('node:module');
  const load = createRequire(loaderPath)(loaderPath) as (path: string) => Promise<ProgramModule>;
  return load(programPath);
}

/** The exit status of a main's result, or a message saying why it is none. */
export function exitStatusOf(result: unknown, exitCode: number | string | undefined = process.exitCode): { status: number; problem: string | null } {
  if (result === undefined || result === null) {
    const fallback = Number(exitCode ?? 0);
    return Number.isInteger(fallback) && fallback >= 0 && fallback <= 255 ? { status: fallback, problem: null } : { status: 1, problem: `process.exitCode ${String(exitCode)} is no status 0..255` };
  }
  if (typeof result === 'number' && Number.isInteger(result) && result >= 0 && result <= 255) return { status: result, problem: null };
  return { status: 1, problem: `main() returned ${typeof result === 'number' ? result : typeof result}, not an exit status 0..255 (or nothing)` };
}

/**
 * Runs a loaded program: awaits its default-exported main and returns the status; a
 * program without one resolves never (it ends with exit()).
 */
export async function runProgram(mod: ProgramModule, log: (line: string) => void): Promise<number> {
  const main = mod['default'];
  if (typeof main !== 'function') return new Promise<number>(() => {});
  const { status, problem } = exitStatusOf(await (main as () => unknown)());
  if (problem !== null) log(problem);
  return status;
}
