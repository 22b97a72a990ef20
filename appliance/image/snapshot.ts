// V8 startup snapshots of guest programs (Node 20's `node --snapshot-blob BLOB
// --build-snapshot SCRIPT`), so that the guest's node, cold under TCG, starts from a
// deserialized heap instead of parsing, compiling and evaluating the whole program:
//
//   const snap = await buildStartupSnapshot({ entry: 'dist/bundles/appliance.cjs', name: 'appliance' });
//   // in the guest: node --snapshot-blob /app/appliance.blob -- --drivers=ours ...
//
// The entry is one classic script (build.mjs step 5) whose main is registered with
// startProgram() (kernel/guest/startup-snapshot.ts, which also says how arguments reach it).
// A blob works only with the node binary that built it and the same V8 options, so the
// cache key (.cache/snapshots/<name>-<key>.blob) covers the binary (path, size, mtime,
// inode, first and last MiB), the options and the entry's content. Blobs are written to a
// temporary file and renamed into place: processes building at once do not collide.
//
// A blob also works only on a CPU with the same features as V8 sees them: node compares
// the blob's V8 tag (ScriptCompiler::CachedDataVersionTag, which hashes V8's version, its
// flags and every CPU feature it detects) with its own. Some of those features have no
// flag to turn them off (CET shadow stacks, CPUID 7.ECX[7]): a blob built on an AMD EPYC
// that has them stopped every guest at start ("Failed to load the startup snapshot",
// status 14; tag 839dbe75 built, c3583e1f expected). So guest blobs are built on the
// guests' CPU: QEMU's TCG `max` model, through qemu-user (`qemu-x86_64 -cpu max node
// ...`, builderCpu 'qemu-max'), in 2-3 s instead of 0.3 s.

import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { findOnPath } from '../qemu/find-binary.js';
import { fileFingerprint, pruneStale, reuseCached } from './cache-files.js';
import { ImageBuildError, cacheDir } from './debian.js';

/** Bump when what goes into a blob changes in a way the key does not see. */
const SNAPSHOT_BUILDER_VERSION = 3;
/** Superseded blobs of the same name older than this are deleted after a build. */
const PRUNE_AGE_MS = 30 * 60 * 1000;
/** A safety net: building the appliance's snapshot takes about a second. */
const BUILD_TIMEOUT_MS = 5 * 60 * 1000;
/** Lines of node's stderr kept in an error message (from the start: the error comes first). */
const STDERR_LINES = 40;

export interface StartupSnapshotSpec {
  /** The script to build the snapshot from: one classic script (e.g. dist/bundles/appliance.cjs). */
  entry: string;
  /** The node binary that builds the blob, the only one that can run it (default: process.execPath). */
  node?: string;
  /**
   * Node/V8 options to build with (default none). Node refuses a blob built with other V8
   * options than it runs with: give the same ones when running it.
   */
  nodeOptions?: readonly string[];
  /** The cache folder (default .cache/snapshots). */
  outDir?: string;
  /**
   * Compile the whole program when the blob is built (default true): the builder runs a
   * small generated script (eagerEntryScript) that compiles the entry with V8's --no-lazy
   * set, puts V8's default back, and runs it; every function's bytecode is then in the
   * blob, which runs without the flag. In a cold guest under TCG, compiling each function
   * on its first call was a large part of the time from node's start to the first
   * response. (--no-lazy on the builder's command line would do it too, but also compiles
   * the builder's own internals into the blob: 0.27 MB more of the compressed image.)
   */
  eagerCompile?: boolean;
  /** The blob is named `<name>-<key>.blob`. */
  name: string;
  /**
   * The CPU the builder runs on: 'host' (default) this machine's, for blobs run here;
   * 'qemu-max' QEMU's TCG `max` model through qemu-user, for blobs run in a guest (the
   * launcher's -cpu max), whose V8 tag must match the guest's (see the top of this file).
   */
  builderCpu?: BuilderCpu;
}

export type BuilderCpu = 'host' | 'qemu-max';

/** The qemu-user binary for x86-64 guests' user mode. */
export const QEMU_USER_BINARY = 'qemu-x86_64';

/**
 * The qemu-user binary (TSVIRTIO_QEMU_USER, or qemu-x86_64 from PATH); an
 * ImageBuildError ERR_SNAPSHOT_QEMU_USER saying how to install it when there is none.
 */
export function findQemuUser(binary = process.env['TSVIRTIO_QEMU_USER'] ?? QEMU_USER_BINARY): string {
  const found = findOnPath(binary);
  if (found !== null) return found;
  throw new ImageBuildError(
    'ERR_SNAPSHOT_QEMU_USER',
    `${binary} is not installed (not found in PATH): guest startup snapshots are built on QEMU's CPU model with qemu-user; install it with: apt-get install -y qemu-user (or run npm run setup)`,
  );
}

export interface StartupSnapshot {
  /** The blob: `node --snapshot-blob <path> -- ARGS` runs the program. */
  path: string;
  /** Bytes. */
  size: number;
  /** The cache key (16 hex digits) in the name. */
  key: string;
  /** True when the blob was already in the cache. */
  cached: boolean;
  /** Milliseconds this call took (building, or finding the blob in the cache). */
  buildMs: number;
}

/** Builds (or finds in the cache) the startup snapshot blob of `spec.entry`. */
export async function buildStartupSnapshot(spec: StartupSnapshotSpec): Promise<StartupSnapshot> {
  const t0 = Date.now();
  if (!/^[A-Za-z0-9_.-]+$/.test(spec.name)) throw new ImageBuildError('ERR_SPEC', `bad snapshot name: ${JSON.stringify(spec.name)}`);
  const entry = resolve(spec.entry);
  if (!existsSync(entry)) throw new ImageBuildError('ERR_SNAPSHOT_ENTRY', `startup snapshot entry not found: ${entry} (run \`node build.mjs\`)`);
  const node = resolve(spec.node ?? process.execPath);
  if (!existsSync(node)) throw new ImageBuildError('ERR_SNAPSHOT_NODE', `node binary not found: ${node}`);
  const nodeOptions = [...(spec.nodeOptions ?? [])];
  const eager = spec.eagerCompile ?? true;
  const builderCpu = spec.builderCpu ?? 'host';
  if (builderCpu !== 'host' && builderCpu !== 'qemu-max') throw new ImageBuildError('ERR_SPEC', `builderCpu must be host or qemu-max, got ${JSON.stringify(builderCpu)}`);
  const qemuUser = builderCpu === 'qemu-max' ? realpathSync(findQemuUser()) : null;

  const h = createHash('sha256');
  h.update(`tsvirtio-snapshot v${SNAPSHOT_BUILDER_VERSION}\n`);
  const realNode = realpathSync(node);
  h.update(`node ${realNode} ${fileFingerprint(realNode)}\n`);
  h.update(`options ${JSON.stringify(nodeOptions)}\n`);
  h.update(`eager ${eager}\n`);
  h.update(`entry ${fileFingerprint(entry)}\n`);
  if (qemuUser !== null) h.update(`cpu qemu-max ${qemuUser} ${fileFingerprint(qemuUser)}\n`);
  const key = h.digest('hex').slice(0, 16);
  const outDir = spec.outDir ?? cacheDir('snapshots');
  const path = join(outDir, `${spec.name}-${key}.blob`);

  if (reuseCached(path)) return { path, size: statSync(path).size, key, cached: true, buildMs: Date.now() - t0 };

  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const script = eager ? `${tmp}.eager.cjs` : entry;
    if (eager) writeFileSync(script, eagerEntryScript(entry));
    const nodeArgs = [...nodeOptions, '--snapshot-blob', tmp, '--build-snapshot', script];
    await runBuilder(node, nodeArgs, entry, qemuUser);
    if (!existsSync(tmp)) {
      throw new ImageBuildError('ERR_SNAPSHOT_BUILD', `cannot build the startup snapshot of ${entry} with ${node}: node exited 0 but wrote no blob (did the entry call process.exit()?)`);
    }
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
    rmSync(`${tmp}.eager.cjs`, { force: true });
  }
  pruneStale(outDir, spec.name, 'blob', path, PRUNE_AGE_MS);
  return { path, size: statSync(path).size, key, cached: false, buildMs: Date.now() - t0 };
}

/**
 * The builder script of an eagerly compiled blob: compiles `entry` as node would a
 * CommonJS file (same parameters, file name and line numbers in stack traces) while
 * --no-lazy is set, then runs it with the snapshot builder's require. (Node prints a
 * warning that node:vm is not vetted for snapshot builders: it is used here only while
 * building, and works from the blob; tests/startup-snapshot.test.ts.)
 */
export function eagerEntryScript(entry: string): string {
  return `'use strict';
// Generated by appliance/image/snapshot.ts (eagerCompile): ${JSON.stringify(entry).slice(1, -1)} compiled eagerly, then run.
const v8 = require('v8');
const { compileFunction } = require('vm');
const { readFileSync } = require('fs');
const entry = ${JSON.stringify(entry)};
let main;
v8.setFlagsFromString('--no-lazy');
try {
  main = compileFunction(readFileSync(entry, 'utf8'), ['exports', 'require', 'module', '__filename', '__dirname'], { filename: entry });
} finally {
  v8.setFlagsFromString('--lazy');
}
const module = { exports: {} };
main.call(module.exports, module.exports, require, module, entry, ${JSON.stringify(dirname(entry))});
`;
}

/** Runs node to build a blob; a failure is an ImageBuildError with node's stderr. */
function runBuilder(node: string, args: string[], entry: string, qemuUser: string | null): Promise<void> {
  // NODE_OPTIONS would go into the blob unseen by the cache key (and V8 options in it
  // would be needed again to run the blob): the options are spec.nodeOptions only.
  const env = { ...process.env };
  delete env['NODE_OPTIONS'];
  return new Promise((resolvePromise, reject) => {
    const [command, commandArgs] = qemuUser === null ? [node, args] : [qemuUser, ['-cpu', 'max', node, ...args]];
    execFile(command, commandArgs, { env, encoding: 'utf8', maxBuffer: 16 << 20, timeout: BUILD_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (!err) return resolvePromise();
      const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean; signal?: NodeJS.Signals | null };
      const what = `cannot build the startup snapshot of ${entry} with ${node}${qemuUser === null ? '' : ` under ${qemuUser} -cpu max`}`;
      if (e.code === 'ENOENT' || e.code === 'EACCES') {
        reject(new ImageBuildError('ERR_SNAPSHOT_NODE', `${what}: cannot run node: ${e.message}`));
        return;
      }
      // A crash (SIGTRAP from a V8 check) while serializing: something the entry's top level
      // left behind cannot go into a snapshot, e.g. the addon loaded or a handle open.
      const how = e.killed
        ? `killed after ${BUILD_TIMEOUT_MS / 1000} s`
        : e.signal
          ? `node crashed, ${e.signal}: does the entry's top level load a native addon or leave a handle, timer or socket open?`
          : `exit ${String(e.code)}`;
      reject(new ImageBuildError('ERR_SNAPSHOT_BUILD', `${what} (${how}):\n${stderrExcerpt(stderr)}`));
    });
  });
}

function stderrExcerpt(stderr: string): string {
  const lines = stderr.trim().split('\n');
  if (lines.length === 1 && lines[0] === '') return '(node wrote nothing to stderr)';
  if (lines.length <= STDERR_LINES) return lines.join('\n');
  return [...lines.slice(0, STDERR_LINES), `... (${lines.length - STDERR_LINES} more lines)`].join('\n');
}
