// Debian packages as raw material for guest images: downloaded with `apt-get download`
// and unpacked with `dpkg -x`, never installed on the host.
//
//   .cache/debs/<file>.deb       the downloaded packages
//   .cache/pkgroot/<pkg>/        the unpacked package trees
//
// Both are cached: a package whose tree exists is neither downloaded nor unpacked again.
// Several processes may build at once (ava runs test files in parallel), so downloads
// and unpacking go to private temporary folders that are renamed into place.

import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export class ImageBuildError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ImageBuildError';
    this.code = code;
  }
}

interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command; a failure names the command and, when it is missing, the package to install. */
export function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; hint?: string } = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env, maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolvePromise({ stdout, stderr });
      const e = err as NodeJS.ErrnoException & { code?: string | number };
      const line = `${cmd} ${args.join(' ')}`;
      if (e.code === 'ENOENT') {
        reject(new ImageBuildError('ERR_TOOL_MISSING', `command not found: ${cmd}${opts.hint ? ` (${opts.hint})` : ''}`));
        return;
      }
      const detail = (stderr || stdout || String(err)).trim().split('\n').slice(-8).join('\n');
      reject(new ImageBuildError('ERR_COMMAND_FAILED', `\`${line}\` failed (exit ${String(e.code)}):\n${detail}`));
    });
  });
}

/** The repository root (the folder holding package.json), found from this file's location. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'build.mjs'))) return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

/** The cache folder: $TSVIRTIO_CACHE or <repo>/.cache; `sub` parts are joined and created. */
export function cacheDir(...sub: string[]): string {
  const base = process.env['TSVIRTIO_CACHE'] ? resolve(process.env['TSVIRTIO_CACHE']) : join(repoRoot(), '.cache');
  const dir = join(base, ...sub);
  mkdirSync(dir, { recursive: true });
  return dir;
}

const APT_HINT = 'apt-get comes with Debian; this builder needs a Debian (or Debian-based) host';

let aptUpdated: Promise<void> | undefined;
/** Runs `apt-get update` at most once per process. */
function aptUpdateOnce(): Promise<void> {
  aptUpdated ??= run('apt-get', ['update', '-q'], { hint: APT_HINT }).then(
    () => undefined,
    (err: Error) => {
      throw new ImageBuildError('ERR_APT_UPDATE', `apt-get update failed (needed to find packages): ${err.message}`);
    },
  );
  return aptUpdated;
}

/** Runs an apt command; when it fails because a package is unknown, updates the lists once and retries. */
async function withAptRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (first) {
    if (first instanceof ImageBuildError && first.code === 'ERR_TOOL_MISSING') throw first;
    await aptUpdateOnce();
    try {
      return await fn();
    } catch (second) {
      const msg = second instanceof Error ? second.message : String(second);
      throw new ImageBuildError('ERR_PACKAGE', `${what} failed even after apt-get update: ${msg}`);
    }
  }
}

export interface DebianPackage {
  /** Package name, e.g. "busybox-static". */
  readonly name: string;
  /** The unpacked tree (`dpkg -x`): files sit at root + their installed path. */
  readonly root: string;
}

function debFileFor(debsDir: string, name: string): string | undefined {
  const f = readdirSync(debsDir).find((n) => n.startsWith(`${name}_`) && n.endsWith('.deb'));
  return f ? join(debsDir, f) : undefined;
}

const inFlight = new Map<string, Promise<DebianPackage>>();

/**
 * Downloads (apt-get download) and unpacks (dpkg -x) one package into
 * .cache/pkgroot/<name>/, unless it is there already.
 */
export function fetchDebianPackage(name: string): Promise<DebianPackage> {
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(name)) return Promise.reject(new ImageBuildError('ERR_PACKAGE', `not a package name: ${name}`));
  let p = inFlight.get(name);
  if (!p) {
    p = fetchUncached(name);
    inFlight.set(name, p);
    p.catch(() => inFlight.delete(name));
  }
  return p;
}

async function fetchUncached(name: string): Promise<DebianPackage> {
  const pkgroot = cacheDir('pkgroot');
  const root = join(pkgroot, name);
  if (existsSync(root)) return { name, root };

  const debsDir = cacheDir('debs');
  let deb = debFileFor(debsDir, name);
  if (!deb) {
    const tmp = mkdtempSync(join(debsDir, `.dl-${name}-`));
    chmodSync(tmp, 0o777); // apt drops privileges to _apt for downloads when it can
    try {
      await withAptRetry(`apt-get download ${name}`, () => run('apt-get', ['download', '-q', name], { cwd: tmp, hint: APT_HINT }));
      const got = readdirSync(tmp).find((n) => n.endsWith('.deb'));
      if (!got) throw new ImageBuildError('ERR_PACKAGE', `apt-get download ${name} produced no .deb file`);
      deb = join(debsDir, got);
      renameSync(join(tmp, got), deb);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  const tmpRoot = mkdtempSync(join(pkgroot, `.x-${name}-`));
  try {
    await run('dpkg', ['-x', deb, tmpRoot], { hint: 'dpkg comes with Debian (package dpkg)' });
    try {
      renameSync(tmpRoot, root);
    } catch (err) {
      // Another process unpacked the same package first: use theirs.
      if (!existsSync(root)) throw err;
    }
  } catch (err) {
    rmSync(tmpRoot, { recursive: true, force: true });
    if (err instanceof ImageBuildError) {
      throw new ImageBuildError(err.code, `unpacking ${name} (${deb}) failed: ${err.message}`);
    }
    throw err;
  }
  rmSync(tmpRoot, { recursive: true, force: true });
  return { name, root };
}

/**
 * apt-cache answers are cached in .cache/apt-depends.json while the apt lists stay the
 * same: each apt-cache call costs 1-2 s here (the container keeps no pkgcache.bin).
 */
const DEPENDS_CACHE_FILE = 'apt-depends.json';

function aptListsStamp(): string {
  const dir = '/var/lib/apt/lists';
  try {
    let newest = statSync(dir).mtimeMs;
    for (const f of readdirSync(dir)) if (f.endsWith('_Packages') || f.endsWith('Release')) newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
    return String(newest);
  } catch {
    return 'none';
  }
}

interface DependsCache {
  stamp: string;
  depends: Record<string, string[]>;
}

function readDependsCache(): DependsCache {
  const stamp = aptListsStamp();
  try {
    const c = JSON.parse(readFileSync(join(cacheDir(), DEPENDS_CACHE_FILE), 'utf8')) as DependsCache;
    if (c.stamp === stamp && c.depends && typeof c.depends === 'object') return c;
  } catch {
    /* missing or damaged: start over */
  }
  return { stamp, depends: {} };
}

function rememberDepends(name: string, deps: string[]): void {
  const c = readDependsCache();
  c.depends[name] = deps;
  const file = join(cacheDir(), DEPENDS_CACHE_FILE);
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, JSON.stringify(c));
  renameSync(tmp, file);
}

/** The packages `name` depends on (Depends and Pre-Depends; first choice of alternatives; no virtual ones). */
export async function packageDepends(name: string): Promise<string[]> {
  const cached = readDependsCache().depends[name];
  if (Array.isArray(cached)) return cached;
  const deps = await packageDependsUncached(name);
  rememberDepends(name, deps);
  return deps;
}

async function packageDependsUncached(name: string): Promise<string[]> {
  const { stdout } = await withAptRetry(`apt-cache depends ${name}`, () =>
    run('apt-cache', ['depends', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', name], { hint: APT_HINT }),
  );
  const deps: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s+\|?(?:Pre)?Depends:\s+(\S+)/.exec(line);
    if (!m || m[1]!.startsWith('<')) continue;
    const dep = m[1]!.replace(/:any$/, '');
    if (!deps.includes(dep)) deps.push(dep);
  }
  if (deps.length === 0 && !stdout.includes(name)) throw new ImageBuildError('ERR_PACKAGE', `apt-cache knows no package ${name}`);
  return deps;
}

/** True when the package is installed on the host (so its files are on the host already). */
async function installedOnHost(name: string): Promise<boolean> {
  try {
    const { stdout } = await run('dpkg-query', ['-W', '-f=${Status}', name]);
    return stdout.includes('install ok installed');
  } catch {
    return false;
  }
}

/**
 * Fetches a package and, recursively, the library packages it depends on that are not
 * installed on the host (their files come from the host otherwise). Returns the package
 * first, then the fetched dependencies.
 */
export async function fetchDebianPackageWithLibraries(name: string): Promise<DebianPackage[]> {
  const out: DebianPackage[] = [await fetchDebianPackage(name)];
  const seen = new Set<string>([name]);
  const queue = await packageDepends(name);
  while (queue.length) {
    const dep = queue.shift()!;
    if (seen.has(dep)) continue;
    seen.add(dep);
    if (!/^lib/.test(dep) || (await installedOnHost(dep))) continue;
    out.push(await fetchDebianPackage(dep));
    queue.push(...(await packageDepends(dep)));
  }
  return out;
}

/** The library folders inside unpacked packages (for ldd's LD_LIBRARY_PATH). */
export function libraryDirs(pkgs: readonly DebianPackage[]): string[] {
  const dirs: string[] = [];
  for (const p of pkgs) {
    for (const sub of ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib', 'usr/lib']) {
      const d = join(p.root, sub);
      if (existsSync(d) && statSync(d).isDirectory()) dirs.push(d);
    }
  }
  return dirs;
}

export interface DebianKernel {
  /** The versioned kernel package, e.g. "linux-image-6.1.0-56-cloud-amd64". */
  readonly package: string;
  /** The kernel release, as `uname -r` prints it, e.g. "6.1.0-56-cloud-amd64". */
  readonly version: string;
  /** The compressed kernel image for `qemu -kernel`. */
  readonly vmlinuz: string;
  /** The modules folder (holds kernel/, modules.builtin, modules.order). */
  readonly modulesDir: string;
  /** The kernel's build configuration file (config-<version>). */
  readonly config: string;
  /** The unpacked package tree. */
  readonly root: string;
}

/**
 * Debian's cloud kernel: resolves the metapackage (default "linux-image-cloud-amd64") to
 * the versioned image package it depends on, downloads and unpacks that.
 */
export async function fetchDebianKernel(metapackage = 'linux-image-cloud-amd64'): Promise<DebianKernel> {
  const deps = await packageDepends(metapackage);
  const pkgName = deps.find((d) => /^linux-image-\d/.test(d));
  if (!pkgName) {
    throw new ImageBuildError('ERR_KERNEL', `${metapackage} depends on no linux-image-<version> package (depends: ${deps.join(', ') || 'none'})`);
  }
  const pkg = await fetchDebianPackage(pkgName);
  const bootDir = join(pkg.root, 'boot');
  const vmlinuzName = existsSync(bootDir) ? readdirSync(bootDir).find((n) => n.startsWith('vmlinuz-')) : undefined;
  if (!vmlinuzName) throw new ImageBuildError('ERR_KERNEL', `${pkgName} has no /boot/vmlinuz-* (unpacked at ${pkg.root})`);
  const version = vmlinuzName.slice('vmlinuz-'.length);
  const modulesDir = [join(pkg.root, 'lib', 'modules', version), join(pkg.root, 'usr', 'lib', 'modules', version)].find((d) => existsSync(d));
  if (!modulesDir) throw new ImageBuildError('ERR_KERNEL', `${pkgName} has no lib/modules/${version} (unpacked at ${pkg.root})`);
  return {
    package: pkgName,
    version,
    vmlinuz: join(bootDir, vmlinuzName),
    modulesDir,
    config: join(bootDir, `config-${version}`),
    root: pkg.root,
  };
}
