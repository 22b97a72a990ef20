// The guest kernel of the microvm appliance, built from Debian's linux-source package:
// `make tinyconfig`, the options of appliance/image/kernel/tsvirtio.config merged on top,
// the patches of appliance/image/kernel/patches/ applied, `make vmlinux`, stripped. The
// result is cached under .cache/kernels/<key>/ (vmlinux, config, build.log), the key
// being a hash of everything that goes in: the source tarball, the config fragment,
// the patches, the compiler's version and this builder's version. A build takes about
// 5 minutes on two cores and shows its progress; later calls return at once.
//
//   .cache/kernels/<key>/vmlinux       uncompressed ELF with a PVH note, stripped (11.8 MB)
//   .cache/kernels/<key>/vmlinux-packed-v<N>  the same without its padding (kernel-elf.ts,
//                                      2.5 MB): what qemu -kernel boots; made from
//                                      vmlinux when missing, so a cached kernel gets it too
//   .cache/kernels/<key>/config        the full .config it was built with
//   .cache/kernels/<key>/build.log     make's output
//   .cache/kernel-build/<key>/         the source tree while building (removed after)
//
// Several processes may ask at once (test files run in parallel): the first takes a lock
// folder, the others wait for its result (or take over when its process is gone).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileFingerprint, reuseCached } from './cache-files.js';
import { ImageBuildError, cacheDir, fetchDebianPackage, packageDepends, repoRoot, run } from './debian.js';
import { repackKernelElf } from './kernel-elf.js';

/** Bump when kernel-elf.ts writes something else: the packed file's name carries it. */
const REPACK_VERSION = 1;

/** Bump when what this file produces changes, so cached kernels are rebuilt. */
const BUILDER_VERSION = 1;
/** About how many objects `make vmlinux` compiles with our configuration (for the progress display). */
const EXPECTED_OBJECTS = 700;
/** The release suffix from the config fragment (CONFIG_LOCALVERSION). */
export const KERNEL_LOCALVERSION = '-tsvirtio';

export const KERNEL_CONFIG_FRAGMENT = (): string => join(repoRoot(), 'appliance', 'image', 'kernel', 'tsvirtio.config');
export const KERNEL_PATCH_DIR = (): string => join(repoRoot(), 'appliance', 'image', 'kernel', 'patches');

/** Host tools the build needs, and the Debian package of each (npm run setup installs them). */
const BUILD_TOOLS: ReadonlyArray<readonly [string, string]> = [
  ['make', 'make'],
  ['gcc', 'gcc'],
  ['flex', 'flex'],
  ['bison', 'bison'],
  ['bc', 'bc'],
  ['patch', 'patch'],
  ['xz', 'xz-utils'],
  ['strip', 'binutils'],
  ['perl', 'perl'],
];

export interface GuestKernel {
  /** The stripped vmlinux (PVH entry: no decompression in the guest). */
  vmlinux: string;
  /** What `qemu -kernel` boots: vmlinux without its padding (kernel-elf.ts), the same memory image. */
  image: string;
  /** `uname -r` in the guest, e.g. 6.1.192-tsvirtio. */
  release: string;
  /** The full .config. */
  config: string;
  /** The cache key (a hash of every input). */
  key: string;
  /** True when it was there already. */
  cached: boolean;
  /** Milliseconds spent (0 when cached). */
  buildMs: number;
}

export interface KernelBuildOptions {
  /** Progress lines: the steps, and the compile count every few seconds. */
  progress?: (line: string) => void;
  /** Parallel jobs for make (default: CPUs + 1). */
  jobs?: number;
}

/** One line of the config fragment: `CONFIG_X=value` or `# CONFIG_X is not set`. */
export interface ConfigOption {
  name: string;
  /** The value as written (`y`, a number, a quoted string), or null for "is not set". */
  value: string | null;
  line: number;
}

/** Parses a Kconfig fragment; a line that is neither an option, a comment nor blank is an error naming it. */
export function parseConfigFragment(text: string, file = 'config fragment'): ConfigOption[] {
  const out: ConfigOption[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    let m = /^(CONFIG_[A-Za-z0-9_]+)=(.+)$/.exec(line);
    if (m) {
      out.push({ name: m[1]!, value: m[2]!, line: i + 1 });
      return;
    }
    m = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (m) {
      out.push({ name: m[1]!, value: null, line: i + 1 });
      return;
    }
    if (line.startsWith('#')) return;
    throw new ImageBuildError('ERR_KERNEL_CONFIG', `${file}:${i + 1}: not a config option or comment: ${JSON.stringify(raw)}`);
  });
  return out;
}

/**
 * The options of `wanted` that a full .config does not have as written (kconfig drops
 * an option whose dependencies are missing, or that a source update renamed).
 */
export function unmetOptions(wanted: readonly ConfigOption[], dotConfig: string): string[] {
  const have = new Map<string, string>();
  for (const line of dotConfig.split('\n')) {
    const m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m) have.set(m[1]!, m[2]!);
  }
  const bad: string[] = [];
  for (const o of wanted) {
    const got = have.get(o.name);
    if (o.value === null) {
      if (got !== undefined && got !== 'n') bad.push(`${o.name} should be off but is ${got}`);
    } else if (got !== o.value) {
      bad.push(`${o.name} should be ${o.value} but is ${got ?? 'not set'}`);
    }
  }
  return bad;
}

/** The linux-source-X.Y package the `linux-source` metapackage points at. */
async function sourcePackageName(): Promise<string> {
  const deps = await packageDepends('linux-source');
  const name = deps.find((d) => /^linux-source-\d+\.\d+$/.test(d));
  if (!name) throw new ImageBuildError('ERR_KERNEL', `the linux-source package depends on no linux-source-X.Y package (depends: ${deps.join(', ') || 'none'})`);
  return name;
}

async function checkTools(): Promise<void> {
  const missing: string[] = [];
  for (const [tool, pkg] of BUILD_TOOLS) {
    try {
      await run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      missing.push(`${tool} (${pkg})`);
    }
  }
  if (!existsSync('/usr/include/libelf.h') && !existsSync('/usr/include/gelf.h')) missing.push('libelf headers (libelf-dev)');
  if (missing.length) {
    const pkgs = [...new Set(missing.map((m) => /\(([^)]+)\)/.exec(m)![1]!))];
    throw new ImageBuildError('ERR_TOOL_MISSING', `building the guest kernel needs ${missing.join(', ')}: run npm run setup, or apt-get install -y ${pkgs.join(' ')}`);
  }
}

function patchFiles(): string[] {
  const dir = KERNEL_PATCH_DIR();
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.patch')).sort().map((n) => join(dir, n)) : [];
}

/** Runs a command in `cwd`, appending its output to `log`; on failure the error shows the last lines. */
function runLogged(cmd: string, args: string[], cwd: string, log: string, onLine?: (line: string) => void, stdin?: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const out = createWriteStream(log, { flags: 'a' });
    out.write(`$ ${cmd} ${args.join(' ')}\n`);
    const child = spawn(cmd, args, { cwd, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let tail: string[] = [];
    let partial = '';
    const onData = (d: Buffer): void => {
      out.write(d);
      const text = partial + d.toString('utf8');
      const lines = text.split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        tail.push(l);
        onLine?.(l);
      }
      if (tail.length > 200) tail = tail.slice(-40);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    if (stdin !== undefined) child.stdin!.end(stdin);
    child.on('error', (e) => {
      out.end();
      reject(new ImageBuildError('ERR_COMMAND_FAILED', `cannot run ${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      out.end();
      if (code === 0) resolvePromise();
      else reject(new ImageBuildError('ERR_COMMAND_FAILED', `\`${cmd} ${args.join(' ')}\` failed (${code ?? signal}) in ${cwd}; the end of ${log}:\n${[...tail, partial].slice(-25).join('\n')}`));
    });
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const inFlight = new Map<string, Promise<GuestKernel>>();

/** Builds the guest kernel, or returns the cached one. */
export async function buildGuestKernel(opts: KernelBuildOptions = {}): Promise<GuestKernel> {
  const progress = opts.progress ?? (() => {});
  const fragmentPath = KERNEL_CONFIG_FRAGMENT();
  const fragment = readFileSync(fragmentPath, 'utf8');
  const options = parseConfigFragment(fragment, fragmentPath);
  const patches = patchFiles();
  const srcName = await sourcePackageName();
  const pkg = await fetchDebianPackage(srcName);
  const tarball = join(pkg.root, 'usr', 'src', `${srcName}.tar.xz`);
  if (!existsSync(tarball)) throw new ImageBuildError('ERR_KERNEL', `${srcName} has no usr/src/${srcName}.tar.xz (unpacked at ${pkg.root})`);
  let gcc = 'unknown';
  try {
    gcc = (await run('gcc', ['--version'])).stdout.split('\n')[0]!;
  } catch {
    /* checkTools reports it below if a build is needed */
  }
  const h = createHash('sha256');
  h.update(`tsvirtio-kernel v${BUILDER_VERSION}\n${srcName} ${fileFingerprint(tarball)}\n${gcc}\n`);
  h.update(fragment);
  for (const p of patches) h.update(`\n--- ${p.split('/').pop()}\n${readFileSync(p, 'utf8')}`);
  const key = h.digest('hex').slice(0, 16);

  let p = inFlight.get(key);
  if (!p) {
    p = buildOrWait({ key, srcName, tarball, options, fragmentPath, patches }, progress, opts.jobs);
    inFlight.set(key, p);
    p.catch(() => inFlight.delete(key));
  }
  return p;
}

/** vmlinux-packed-v<N> beside vmlinux, written (atomically) when missing. */
function packedKernel(outDir: string): string {
  const packed = join(outDir, `vmlinux-packed-v${REPACK_VERSION}`);
  if (reuseCached(packed)) return packed;
  const vmlinux = join(outDir, 'vmlinux');
  const tmp = `${packed}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, repackKernelElf(readFileSync(vmlinux), vmlinux), { mode: 0o644 });
    renameSync(tmp, packed);
  } finally {
    rmSync(tmp, { force: true });
  }
  return packed;
}

function resultIn(outDir: string, key: string, cached: boolean, buildMs: number): GuestKernel {
  return {
    vmlinux: join(outDir, 'vmlinux'),
    image: packedKernel(outDir),
    release: readFileSync(join(outDir, 'release'), 'utf8').trim(),
    config: join(outDir, 'config'),
    key,
    cached,
    buildMs,
  };
}

/** What a build starts from: the cache key and the inputs it hashes. */
interface KernelInputs {
  key: string;
  /** linux-source-X.Y */
  srcName: string;
  tarball: string;
  options: ConfigOption[];
  fragmentPath: string;
  patches: string[];
}

async function buildOrWait(inputs: KernelInputs, progress: (line: string) => void, jobs: number | undefined): Promise<GuestKernel> {
  const { key } = inputs;
  const kernels = cacheDir('kernels');
  const outDir = join(kernels, key);
  if (reuseCached(join(outDir, 'vmlinux'))) return resultIn(outDir, key, true, 0);
  const lock = join(kernels, `${key}.lock`);
  for (let announced = false; ; ) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Another process builds it: wait for the result, or take over if it is gone.
    let owner = NaN;
    try {
      owner = Number(readFileSync(join(lock, 'pid'), 'utf8'));
    } catch {
      /* between mkdir and writing the pid: wait */
    }
    if (Number.isInteger(owner) && owner > 0 && !processAlive(owner)) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    if (!announced) progress(`guest kernel: another process (pid ${owner}) is building it; waiting`);
    announced = true;
    await new Promise((r) => setTimeout(r, 2000));
    if (existsSync(join(outDir, 'vmlinux'))) return resultIn(outDir, key, true, 0);
  }
  try {
    if (existsSync(join(outDir, 'vmlinux'))) return resultIn(outDir, key, true, 0);
    return await build(inputs, progress, jobs, outDir);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

async function build(inputs: KernelInputs, progress: (line: string) => void, jobs: number | undefined, outDir: string): Promise<GuestKernel> {
  const { key, srcName, tarball, options, fragmentPath, patches } = inputs;
  await checkTools();
  const t0 = Date.now();
  const elapsed = (): string => {
    const s = Math.round((Date.now() - t0) / 1000);
    return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  };
  const work = join(cacheDir('kernel-build'), key);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const log = join(work, 'build.log');
  progress(`guest kernel: building from ${srcName} (once; about 5 minutes on 2 cores; log: ${log})`);

  progress('guest kernel: unpacking the source');
  await runLogged('tar', ['-xJf', tarball, '-C', work], work, log);
  const tree = join(work, srcName);
  if (!existsSync(join(tree, 'Makefile'))) throw new ImageBuildError('ERR_KERNEL', `${tarball} did not unpack to ${tree}`);

  for (const p of patches) {
    progress(`guest kernel: applying ${p.split('/').pop()}`);
    await runLogged('patch', ['-p1', '--forward', '--batch'], tree, log, undefined, readFileSync(p, 'utf8'));
  }

  progress('guest kernel: configuring (tinyconfig + appliance/image/kernel/tsvirtio.config)');
  await runLogged('make', ['tinyconfig'], tree, log);
  await runLogged(join(tree, 'scripts', 'kconfig', 'merge_config.sh'), ['-m', '.config', fragmentPath], tree, log);
  await runLogged('make', ['olddefconfig'], tree, log);
  const unmet = unmetOptions(options, readFileSync(join(tree, '.config'), 'utf8'));
  if (unmet.length) {
    throw new ImageBuildError('ERR_KERNEL_CONFIG', `the kernel configuration lost options of ${fragmentPath} (missing dependencies, or renamed in ${srcName}): ${unmet.join('; ')}`);
  }

  const j = jobs ?? availableParallelism() + 1;
  let compiled = 0;
  let lastReport = Date.now();
  progress(`guest kernel: compiling with make -j${j}`);
  await runLogged('make', [`-j${j}`, 'vmlinux'], tree, log, (line) => {
    if (/^\s+(CC|AS)\s/.test(line)) compiled++;
    if (Date.now() - lastReport >= 5000) {
      lastReport = Date.now();
      progress(`guest kernel: ${compiled} files compiled (about ${Math.min(99, Math.round((compiled / EXPECTED_OBJECTS) * 100))}%), ${elapsed()}`);
    }
  });
  const release = readFileSync(join(tree, 'include', 'config', 'kernel.release'), 'utf8').trim();

  // Into the cache, atomically: a half-written folder is never seen as a result.
  const tmpOut = `${outDir}.${process.pid}.tmp`;
  rmSync(tmpOut, { recursive: true, force: true });
  mkdirSync(tmpOut, { recursive: true });
  await run('strip', ['-o', join(tmpOut, 'vmlinux'), join(tree, 'vmlinux')], { hint: 'binutils' });
  writeFileSync(join(tmpOut, 'config'), readFileSync(join(tree, '.config')));
  writeFileSync(join(tmpOut, 'release'), release + '\n');
  writeFileSync(join(tmpOut, 'build.log'), readFileSync(log));
  rmSync(outDir, { recursive: true, force: true });
  renameSync(tmpOut, outDir);
  rmSync(work, { recursive: true, force: true });
  const buildMs = Date.now() - t0;
  const result = resultIn(outDir, key, false, buildMs);
  progress(`guest kernel: ${release} built in ${elapsed()} (${(statSync(result.image).size / 1e6).toFixed(1)} MB without its padding, ${outDir})`);
  return result;
}
