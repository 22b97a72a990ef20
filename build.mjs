#!/usr/bin/env node
// Builds everything the tests and programs need:
//   1. type-checks the whole tree with tsc (a type error fails the build);
//   2. transpiles every .ts file to dist/ (same layout, ESM) with esbuild;
//   3. builds the native addon with node-gyp when its sources are newer than the binary;
//   4. bundles the guest programs into single files (dist/bundles/) for the initramfs;
//   5. bundles the appliance's guest program once more as a classic script for V8 startup
//      snapshots (dist/bundles/appliance.cjs).
// Incremental: a fingerprint of every input (path, size, mtime) is kept in
// dist/.build-stamp.json; when nothing changed, steps 1, 2, 4 and 5 are skipped (1 also
// when the last build with that fingerprint type-checked already). `npm test` and CI
// type-check; `npm start` and `tsvirtio` do not (the type-check takes 10-55 s here).
// Flags: --no-typecheck (skip step 1), --quiet (only failures and a line when it rebuilds),
// --force (ignore the stamp). Also importable: `await build({ typecheck, quiet })`.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('.', import.meta.url));
const STAMP = join(root, 'dist', '.build-stamp.json');
/** Outputs that must exist for a skipped build to count as built. */
const REQUIRED_OUTPUTS = ['dist/appliance/main.js', 'dist/bundles/appliance.js', 'dist/bundles/appliance.cjs', 'dist/bundles/runtime.js', 'dist/bundles/runtime.cjs', 'build/Release/tsvirtio.node'];

export class BuildError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BuildError';
    this.code = 'ERR_BUILD';
  }
}

const SOURCE_DIRS = ['kernel', 'drivers', 'appliance', 'tests', 'bench', 'fuzz'];

function walk(dir, out) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isDirectory()) walk(path, out);
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

function newestMtime(paths) {
  let newest = 0;
  for (const p of paths) if (existsSync(p)) newest = Math.max(newest, statSync(p).mtimeMs);
  return newest;
}

function fail(msg) {
  throw new BuildError(msg);
}

/** Every input of the build: the sources, the build's own files, the lock file. */
function inputFiles() {
  const files = SOURCE_DIRS.flatMap((d) => walk(join(root, d), []));
  for (const f of ['build.mjs', 'tsconfig.json', 'package.json', 'package-lock.json', 'binding.gyp']) if (existsSync(join(root, f))) files.push(join(root, f));
  files.push(...walkNative(join(root, 'kernel', 'native')));
  return files.sort();
}

/** Path, size and mtime of every input, hashed: changes when any input does. */
function fingerprint() {
  const h = createHash('sha256');
  for (const f of inputFiles()) {
    const st = statSync(f);
    h.update(`${relative(root, f)}\0${st.size}\0${st.mtimeMs}\n`);
  }
  return h.digest('hex');
}

function readStamp() {
  try {
    return JSON.parse(readFileSync(STAMP, 'utf8'));
  } catch {
    return null;
  }
}

function walkOutputs(dir, out) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walkOutputs(path, out);
    else if (name.endsWith('.js') || name.endsWith('.js.map')) out.push(path);
  }
  return out;
}

function walkNative(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => /\.(cc|h)$/.test(n)).map((n) => join(dir, n));
}

function findNodeGyp() {
  const candidates = [
    join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(process.execPath, '..', '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  for (const c of candidates) if (existsSync(c)) return c;
  fail('node-gyp not found (it ships with npm; run `npm ci`)');
}

/**
 * Builds what changed. typecheck: run tsc (default true); quiet: print only a line when it
 * rebuilds; force: ignore the stamp; output: where its lines go (default console.log;
 * `tsvirtio run` keeps stdout for the program). Throws BuildError (message: what failed).
 */
export async function build({ typecheck = true, quiet = false, force = false, output = console.log } = {}) {
  const t0 = Date.now();
  const log = (msg) => {
    if (!quiet) output(`[build] ${msg}`);
  };
  const print = fingerprint();
  const stamp = force ? null : readStamp();
  const same = stamp !== null && stamp.fingerprint === print && REQUIRED_OUTPUTS.every((f) => existsSync(join(root, f)));
  if (same && (!typecheck || stamp.typechecked)) {
    log('nothing changed since the last build');
    return { rebuilt: false };
  }
  const needEmit = !same;
  let esbuild = null;
  if (needEmit) esbuild = await import('esbuild');
  // 1. Type-check.
  if (typecheck) {
    const t0 = Date.now();
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    if (!existsSync(tsc)) fail('typescript is not installed: run `npm ci` first');
    const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
    if (r.status !== 0) fail('type errors (see above)');
    log(`type-check ok (${Date.now() - t0} ms)`);
  }

  // 2. Transpile every TypeScript file, keeping the folder layout.
  if (needEmit) {
    const t0 = Date.now();
    const entryPoints = SOURCE_DIRS.flatMap((d) => walk(join(root, d), []));
    // dist/ is not wiped first (a test run in progress keeps its files): outputs are
    // overwritten, and outputs whose source is gone are pruned after the build.
    await esbuild.build({
      entryPoints,
      outdir: join(root, 'dist'),
      outbase: root,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      sourcemap: 'linked',
      logLevel: 'error',
    });
    const expected = new Set(entryPoints.map((e) => join(root, 'dist', relative(root, e)).replace(/\.ts$/, '.js')));
    let pruned = 0;
    for (const d of SOURCE_DIRS) {
      for (const out of walkOutputs(join(root, 'dist', d), [])) {
        if (!expected.has(out.replace(/\.map$/, ''))) {
          rmSync(out, { force: true });
          pruned++;
        }
      }
    }
    log(`transpiled ${entryPoints.length} files (${Date.now() - t0} ms)${pruned ? `, pruned ${pruned} stale outputs` : ''}`);
  }


  // 3. The native addon (node-gyp, from binding.gyp), rebuilt only when its sources changed.
  if (existsSync(join(root, 'binding.gyp'))) {
    const binary = join(root, 'build', 'Release', 'tsvirtio.node');
    const sources = [join(root, 'binding.gyp'), ...walkNative(join(root, 'kernel', 'native'))];
    if (!existsSync(binary) || newestMtime(sources) > statSync(binary).mtimeMs) {
      const t0 = Date.now();
      const gyp = findNodeGyp();
      if (!existsSync(join(root, 'node_modules', 'node-addon-api'))) fail('node-addon-api is not installed: run `npm ci` first');
      // node-gyp run directly does not read ~/.npmrc: point it at the headers of the
      // running node when they are installed next to it (e.g. /usr/include/node), so no
      // download is attempted. An explicit npm_config_nodedir wins.
      // Already configured for this binding.gyp: an incremental `build` is enough.
      const makefile = join(root, 'build', 'Makefile');
      const configured = existsSync(makefile) && statSync(makefile).mtimeMs >= statSync(join(root, 'binding.gyp')).mtimeMs;
      const gypArgs = [gyp, configured ? 'build' : 'rebuild'];
      const localHeaders = join(process.execPath, '..', '..');
      if (!process.env.npm_config_nodedir && existsSync(join(localHeaders, 'include', 'node', 'node_api.h'))) {
        gypArgs.push(`--nodedir=${localHeaders}`);
      }
      // binding.gyp runs `node -p ...`: make sure that is this node.
      const env = { ...process.env, PATH: `${join(process.execPath, '..')}:${process.env.PATH ?? ''}` };
      // Quiet: node-gyp's ~40 lines of "gyp info" are kept back and shown only if it fails.
      const r = spawnSync(process.execPath, gypArgs, { cwd: root, env, stdio: quiet ? 'pipe' : 'inherit', encoding: 'utf8' });
      if (r.status !== 0) fail(`native addon build failed (node-gyp ${gypArgs[1]})${quiet ? `:\n${`${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-30).join('\n')}` : ''}`);
      log(`native addon built (${Date.now() - t0} ms)`);
    }
  }



  // 4. Guest bundles: one self-contained file per guest program.
  if (needEmit) {
    const bundles = [
      // [entry, output name]
      ['appliance/guest/rng-probe.ts', 'rng-probe.js'],
      ['appliance/guest/vsock-echo.ts', 'vsock-echo.js'],
      ['appliance/guest/vsock-matrix.ts', 'vsock-matrix.js'],
      ['appliance/guest/vsock-sibling-peer.ts', 'vsock-sibling-peer.js'], // tests/appliance-linux-siblings.test.ts
      ['appliance/guest/panic-probe.ts', 'panic-probe.js'],
      ['appliance/guest/virtiofs-probe.ts', 'virtiofs-probe.js'],
      ['appliance/guest/file-server-probe.ts', 'file-server-probe.js'],
      ['appliance/run/guest-entry.ts', 'appliance.js'],
      ['appliance/runtime/launcher.ts', 'runtime.js'], // tsvirtio run / build: a user's program behind the runtime
      ['appliance/guest/fs-tree.ts', 'fs-tree.js'],
      ['appliance/guest/fs-bench.ts', 'fs-bench.js'],
      ['tests/support/memory-hog.ts', 'memory-hog.js'], // tests/guest-oom.test.ts
    ];
    for (const [entry, out] of bundles) {
      if (!existsSync(join(root, entry))) continue;
      await esbuild.build({
        entryPoints: [join(root, entry)],
        outfile: join(root, 'dist', 'bundles', out),
        bundle: true,
        format: 'esm',
        platform: 'node',
        target: 'node20',
        external: ['*.node'],
        logLevel: 'error',
      });
      log(`bundled ${relative(root, entry)} -> dist/bundles/${out}`);
    }
  }

  // 5. Script bundles for `node --snapshot-blob BLOB --build-snapshot dist/bundles/X.cjs`
  //    (appliance/image/snapshot.ts, kernel/guest/startup-snapshot.ts). Node 20 builds a
  //    snapshot from one classic script that gets require() (built-in modules only),
  //    __filename and __dirname but no `module`, `exports` or import(): an IIFE, not format
  //    cjs, with import() of built-in modules turned into require(). import.meta.url is
  //    undefined there (esbuild would leave an empty object): the program's files that use
  //    import.meta must handle that and be listed in importMetaAware; any other fails the build.
  if (needEmit) {
    const scriptBundles = [
      // [entry, output name]
      ['appliance/run/guest-entry.ts', 'appliance.cjs'],
      ['appliance/runtime/launcher.ts', 'runtime.cjs'],
      ['tests/support/snapshot-probe.ts', 'snapshot-probe.cjs'], // tests/startup-snapshot.test.ts
    ];
    const importMetaAware = new Set(['kernel/native/index.ts']);
    for (const [entry, out] of scriptBundles) {
      if (!existsSync(join(root, entry))) continue;
      const result = await esbuild.build({
        entryPoints: [join(root, entry)],
        outfile: join(root, 'dist', 'bundles', out),
        bundle: true,
        format: 'iife',
        platform: 'node',
        target: 'node20',
        external: ['*.node'],
        define: { 'import.meta.url': 'undefined' },
        // The blob keeps every function's source: without the layout's whitespace the image
        // is 0.03 MB smaller. Names stay, so stack traces still name their functions.
        minifyWhitespace: true,
        // import() has no loader in a snapshot's script (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING):
        // esbuild turns it into require(), which loads built-in modules lazily, at run time.
        supported: { 'dynamic-import': false },
        absWorkingDir: root, // metafile paths relative to the repository
        metafile: true,
        logLevel: 'error',
      });
      const unaware = Object.keys(result.metafile.inputs).filter(
        (f) => !importMetaAware.has(f) && /\bimport\.meta\b/.test(readFileSync(join(root, f), 'utf8')),
      );
      if (unaware.length > 0) {
        fail(`${entry} -> dist/bundles/${out}: import.meta is undefined in this script bundle, but ${unaware.join(', ')} use${unaware.length === 1 ? 's' : ''} it (handle undefined, then list the file in build.mjs step 5)`);
      }
      log(`bundled ${relative(root, entry)} -> dist/bundles/${out} (script, for startup snapshots)`);
    }
  }

  mkdirSync(join(root, 'dist'), { recursive: true });
  writeFileSync(STAMP, JSON.stringify({ fingerprint: print, typechecked: typecheck || (same && stamp.typechecked) }) + '\n');
  if (quiet) output(`[build] built in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { rebuilt: true };
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const args = new Set(process.argv.slice(2));
  try {
    await build({ typecheck: !args.has('--no-typecheck'), quiet: args.has('--quiet'), force: args.has('--force') });
  } catch (e) {
    console.error(`[build] FAILED: ${e instanceof BuildError ? e.message : e.stack ?? e}`);
    process.exit(1);
  }
}
