// Starting a program from a V8 startup snapshot (Node 20): the program, bundled into one
// classic script (build.mjs: dist/bundles/appliance.cjs), is run once by
// `node --snapshot-blob BLOB --build-snapshot SCRIPT` (appliance/image/snapshot.ts), which
// evaluates its top level (module code: constants, classes, tables) and serializes the
// heap; `node --snapshot-blob BLOB ...` then starts from that heap and runs the main
// registered here, skipping the parsing, compiling and evaluating of the program.
//
// At build time only the top level runs: nothing there may open files, timers, sockets
// or other handles, load the native addon (process.dlopen cannot be serialized), or read
// process.argv / process.env (they would be the builder's). Built-in modules Node 20 has
// not vetted for snapshots (child_process, inspector, module, worker_threads, ...) are
// imported lazily (`await import(...)`) where they are used.
//
// Arguments. A deserialized main sees (Node 20.20; tests/startup-snapshot.test.ts)
// process.argv = [execPath, ...the arguments after node's own options], with no script
// path at argv[1] (nodejs/node#47466). Node takes every leading `--x` as one of its own
// options (an unknown one: "node: bad option"), so the program's flags come after `--`
// or after a script path, which node ignores when the snapshot has a main:
//   node --snapshot-blob /app/main.blob -- --drivers=ours            argv [node, --drivers=ours]
//   node --snapshot-blob /app/main.blob /app/main.js --drivers=ours  argv [node, /app/main.js, --drivers=ours]
// Before the main runs, process.argv is put in the shape of `node main.js ARGS`
// ([execPath, program, ...ARGS]; program = the script path given, else the blob), so
// code reading process.argv.slice(2) (boot(), the program's flag parser) is the same
// either way. A program started this way must take only arguments starting with `-`:
// a leading one that does not is taken for the script path.
//
// V8 flags are part of the blob: node refuses a blob built with other V8 options than
// it runs with ("built with ... different V8 configurations", exit 14), so any such
// options (e.g. --max-old-space-size) must be given to both.
import { resolve } from 'node:path';
import v8 from 'node:v8';

/**
 * The startup snapshot blob this process was started from (`--snapshot-blob X` among
 * node's options, not building one), resolved against `cwd`; null otherwise.
 */
export function startupSnapshotBlob(execArgv: readonly string[] = process.execArgv, cwd: string = process.cwd()): string | null {
  let blob: string | null = null;
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i]!;
    const eq = arg.indexOf('=');
    // Node accepts underscores for dashes in option names.
    const name = (eq < 0 ? arg : arg.slice(0, eq)).replace(/_/g, '-');
    if (name === '--build-snapshot') return null;
    if (name !== '--snapshot-blob') continue;
    const value = eq < 0 ? execArgv[++i] : arg.slice(eq + 1);
    if (value !== undefined && value !== '') blob = value;
  }
  return blob === null ? null : resolve(cwd, blob);
}

/**
 * process.argv of a main deserialized from `blob`, in the shape of `node PROGRAM ARGS`:
 * [execPath, program, ...ARGS], program being the script path node was given (a first
 * argument not starting with `-`), else the blob.
 */
export function scriptShapedArgv(argv: readonly string[], blob: string): string[] {
  const [execPath = process.execPath, ...rest] = argv;
  const first = rest[0];
  if (first !== undefined && !first.startsWith('-')) return [execPath, ...rest];
  return [execPath, blob, ...rest];
}

/**
 * Runs `main` now; while a startup snapshot is being built (`--build-snapshot`), makes it
 * the snapshot's main instead, run (with process.argv in script shape, see above) when a
 * node starts from the blob. `main` reads its arguments from process.argv.slice(2).
 */
export function startProgram(main: () => void): void {
  if (!v8.startupSnapshot.isBuildingSnapshot()) {
    main();
    return;
  }
  // The \`performance\` global is loaded on first use (node:perf_hooks and five internal
  // modules): touched here, it is part of the snapshot, and the guest's first
  // performance.now() costs microseconds instead of about 5 ms natively (~100 ms cold
  // under TCG). Node refreshes its time origin when a process starts from the blob
  // (tests/startup-snapshot.test.ts checks the clock).
  performance.now();
  v8.startupSnapshot.setDeserializeMainFunction(() => {
    const argv = scriptShapedArgv(process.argv, startupSnapshotBlob() ?? process.execPath);
    process.argv.splice(0, process.argv.length, ...argv);
    main();
  });
}
