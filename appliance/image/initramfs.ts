// A general initramfs builder: files, kernel modules (with their dependencies),
// executables (with their shared libraries and the dynamic loader), busybox and an init
// script go into one uncompressed newc cpio under .cache/images/, named by a hash of
// the inputs and rebuilt only when an input changes.
//
// Guest layout is "merged /usr" like the Debian host: /lib -> usr/lib and
// /lib64 -> usr/lib64 are symlinks, and any guest path given under /lib or /lib64 is
// stored under /usr/lib or /usr/lib64, so the loader path /lib64/ld-linux-x86-64.so.2
// baked into every binary resolves.
//
// Uncompressed on purpose: under TCG the kernel's decompressor is the slow part of
// unpacking, and the kernel accepts a plain cpio.

import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileFingerprint, pruneStale, reuseCached } from './cache-files.js';
import { CpioWriter, archivePath } from './cpio.js';
import { ImageBuildError, cacheDir, run, type DebianKernel } from './debian.js';

/** Bump when the layout this file produces changes, so cached images are rebuilt. */
const BUILDER_VERSION = 3;
/** Stale images of the same name older than this are deleted after a build. */
const PRUNE_AGE_MS = 30 * 60 * 1000;

export interface InitramfsFile {
  /** Path in the guest, e.g. "/app/main.js". */
  guest: string;
  /** A host file to copy (followed if it is a symlink)... */
  host?: string;
  /** ...or the contents. */
  data?: string | Uint8Array;
  /** Permission bits; default: the host file's, or 0644 for data. */
  mode?: number;
  /** A host ELF file stored without its symbol tables (`strip`; image formats that support it). */
  strip?: boolean;
}

export interface InitramfsExecutable {
  /** The host binary, e.g. process.execPath. */
  host: string;
  /** Where it goes in the guest; default: the same path as on the host. */
  guest?: string;
  /** Extra library folders for ldd (LD_LIBRARY_PATH), e.g. from unpacked Debian packages. */
  libraryPath?: string[];
  /** Store it without its symbol tables (`strip`; image formats that support it). */
  strip?: boolean;
  /** Roots to strip from library paths found under them (an unpacked package's root). */
  libraryRoots?: string[];
}

export interface ResolvedModule {
  /** Module name with underscores, as /proc/modules shows it. */
  name: string;
  /** The .ko file on the host (decompressed copy when the kernel ships compressed modules). */
  host: string;
  /** Path in the guest, e.g. /lib/modules/6.1.0-56-cloud-amd64/kernel/net/vmw_vsock/vsock.ko */
  guest: string;
  /** Direct dependencies (names). */
  depends: string[];
}

export interface InitContext {
  /** Modules to load, dependencies first (built-in ones left out). */
  modules: readonly ResolvedModule[];
  /** Kernel release, when a kernel was given. */
  kernelVersion: string | undefined;
  /** Shell lines that insmod every module in order (empty when there are none). */
  loadModulesScript: string;
}

export interface InitramfsSpec {
  /** Image name, used in the cache file name: .cache/images/<name>-<hash>.cpio */
  name: string;
  /** The kernel whose modules are used (required when `modules` is not empty). */
  kernel?: DebianKernel;
  /** Kernel modules by name (dashes or underscores); dependencies are added. */
  modules?: string[];
  /** A static busybox binary: installed as /bin/busybox with a symlink per applet. */
  busybox?: string;
  files?: InitramfsFile[];
  symlinks?: Array<{ guest: string; target: string }>;
  directories?: Array<{ guest: string; mode?: number }>;
  executables?: InitramfsExecutable[];
  /** The /init script (use "#!/bin/busybox sh" with busybox), a function that writes it, or an init program's bytes. */
  init: string | Uint8Array | ((ctx: InitContext) => string);
  /** Output folder; default .cache/images. */
  outDir?: string;
}

/** A built (or cached) image file. */
export interface BuiltImage {
  /** The image file (the cpio for `qemu -initrd`, the squashfs for a disk). */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** The input hash that names the file. */
  key: string;
  /** True when the image existed already and was not rebuilt. */
  cached: boolean;
  /** Milliseconds spent (resolving inputs, plus writing when not cached). */
  buildMs: number;
  /** Modules in load order. */
  modules: ResolvedModule[];
}

export type InitramfsImage = BuiltImage;

// ---------------------------------------------------------------------------------------
// Kernel modules

/** "vmw-vsock_virtio" -> "vmw_vsock_virtio" (the kernel treats - and _ alike in names). */
export const moduleName = (s: string): string => basename(s).replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');

interface ModuleIndex {
  /** name -> path relative to the modules folder */
  paths: Map<string, string>;
  builtin: Set<string>;
  /** From modules.dep when the package has one (Debian generates it at install time only). */
  dep: Map<string, string[]> | undefined;
}

const indexCache = new Map<string, ModuleIndex>();

function moduleIndex(kernel: DebianKernel): ModuleIndex {
  const cached = indexCache.get(kernel.modulesDir);
  if (cached) return cached;
  const paths = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(ent.name)) paths.set(moduleName(ent.name), relative(kernel.modulesDir, p));
    }
  };
  walk(join(kernel.modulesDir, 'kernel'));
  const builtin = new Set<string>();
  const builtinFile = join(kernel.modulesDir, 'modules.builtin');
  if (existsSync(builtinFile)) {
    for (const line of readFileSync(builtinFile, 'utf8').split('\n')) if (line.trim()) builtin.add(moduleName(line.trim()));
  }
  let dep: Map<string, string[]> | undefined;
  const depFile = join(kernel.modulesDir, 'modules.dep');
  if (existsSync(depFile)) {
    dep = new Map();
    for (const line of readFileSync(depFile, 'utf8').split('\n')) {
      const m = /^([^:]+):\s*(.*)$/.exec(line);
      if (m) dep.set(moduleName(m[1]!), m[2]!.split(/\s+/).filter(Boolean).map(moduleName));
    }
  }
  const index = { paths, builtin, dep };
  indexCache.set(kernel.modulesDir, index);
  return index;
}

/** Reads the NUL-separated key=value strings of an ELF64 module's .modinfo section. */
export function readModinfo(ko: Buffer): Map<string, string[]> {
  const bad = (why: string): never => {
    throw new ImageBuildError('ERR_MODULE', `not a readable ELF64 kernel module (${why})`);
  };
  if (ko.length < 64 || ko.readUInt32BE(0) !== 0x7f454c46) bad('no ELF magic');
  if (ko[4] !== 2 || ko[5] !== 1) bad('not ELF64 little-endian');
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const shnum = ko.readUInt16LE(0x3c);
  const shstrndx = ko.readUInt16LE(0x3e);
  if (shentsize < 64 || shoff + shnum * shentsize > ko.length || shstrndx >= shnum) bad('bad section table');
  const sec = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return { name: ko.readUInt32LE(at), offset: Number(ko.readBigUInt64LE(at + 24)), size: Number(ko.readBigUInt64LE(at + 32)) };
  };
  const strtab = sec(shstrndx);
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    const nameEnd = ko.indexOf(0, strtab.offset + s.name);
    if (ko.toString('latin1', strtab.offset + s.name, nameEnd) !== '.modinfo') continue;
    if (s.offset + s.size > ko.length) bad('.modinfo out of range');
    for (const kv of ko.toString('latin1', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      out.set(k, [...(out.get(k) ?? []), kv.slice(eq + 1)]);
    }
  }
  return out;
}

/** A plain .ko on the host: the file itself, or a decompressed copy in .cache/modules/. */
async function plainModule(kernel: DebianKernel, rel: string): Promise<{ host: string; rel: string }> {
  const src = join(kernel.modulesDir, rel);
  const m = /^(.*\.ko)\.(xz|zst|gz)$/.exec(rel);
  if (!m) return { host: src, rel };
  const plainRel = m[1]!;
  const out = join(cacheDir('modules', kernel.version), plainRel);
  if (!existsSync(out)) {
    cacheDir('modules', kernel.version, relative('.', join(plainRel, '..')));
    const tmp = `${out}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    const tool = m[2] === 'xz' ? ['xz', 'xz-utils'] : m[2] === 'zst' ? ['zstd', 'zstd'] : ['gzip', 'gzip'];
    // `sh -c` only for the redirection; the paths are ours.
    await run('sh', ['-c', `${tool[0]} -dc "$1" > "$2"`, 'sh', src, tmp], {
      hint: `install ${tool[1]}: apt-get install -y ${tool[1]}`,
    }).catch((err: Error) => {
      rmSync(tmp, { force: true });
      throw new ImageBuildError('ERR_MODULE', `decompressing ${rel} with ${tool[0]} failed (apt-get install -y ${tool[1]}): ${err.message}`);
    });
    renameSync(tmp, out);
  }
  return { host: out, rel: plainRel };
}

/**
 * Resolves modules by name to .ko files with their dependencies, dependencies first.
 * Dependencies come from modules.dep when the kernel package has one, otherwise from
 * each module's own "depends=" modinfo field (which is what depmod reads, too).
 */
export async function resolveModules(kernel: DebianKernel, names: readonly string[]): Promise<ResolvedModule[]> {
  const index = moduleIndex(kernel);
  const order: ResolvedModule[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = async (raw: string, chain: string[]): Promise<void> => {
    const name = moduleName(raw);
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new ImageBuildError('ERR_MODULE', `module dependency cycle: ${[...chain, name].join(' -> ')}`);
    const rel = index.paths.get(name);
    if (!rel) {
      if (index.builtin.has(name)) {
        state.set(name, 'done');
        return;
      }
      throw new ImageBuildError(
        'ERR_MODULE',
        `kernel ${kernel.version} has no module ${name}${chain.length ? ` (needed by ${chain.join(' -> ')})` : ''} and it is not built in`,
      );
    }
    state.set(name, 'visiting');
    const plain = await plainModule(kernel, rel);
    let depends: string[];
    if (index.dep) depends = index.dep.get(name) ?? [];
    else {
      const info = readModinfo(readFileSync(plain.host));
      depends = (info.get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean).map(moduleName);
    }
    for (const d of depends) await visit(d, [...chain, name]);
    state.set(name, 'done');
    order.push({ name, host: plain.host, guest: `/lib/modules/${kernel.version}/${plain.rel}`, depends });
  };
  for (const n of names) await visit(n, []);
  return order;
}

// ---------------------------------------------------------------------------------------
// Executables and their shared libraries

export interface SharedLibrary {
  /** The name the binary asks for (DT_NEEDED), or the loader's path. */
  soname: string;
  /** Where ldd found it on the host. */
  host: string;
}

/**
 * The shared libraries of a dynamically linked executable, the dynamic loader included,
 * as ldd resolves them (LD_LIBRARY_PATH = libraryPath first). A static binary has none.
 */
export async function sharedLibraries(exe: string, libraryPath: readonly string[] = []): Promise<SharedLibrary[]> {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_ALL: 'C' };
  if (libraryPath.length) env['LD_LIBRARY_PATH'] = [...libraryPath, ...(process.env['LD_LIBRARY_PATH'] ? [process.env['LD_LIBRARY_PATH']] : [])].join(':');
  let stdout: string;
  try {
    ({ stdout } = await run('ldd', [exe], { env, hint: 'ldd is in the libc-bin package' }));
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/not a dynamic executable|statically linked/.test(msg)) return [];
    throw new ImageBuildError('ERR_LIBRARIES', `cannot list the shared libraries of ${exe}: ${msg}`);
  }
  if (/statically linked|not a dynamic executable/.test(stdout)) return [];
  const libs: SharedLibrary[] = [];
  const missing: string[] = [];
  for (const raw of stdout.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    let m = /^(\S+) => not found/.exec(line);
    if (m) {
      missing.push(m[1]!);
      continue;
    }
    m = /^(\S+) => (\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (m) {
      libs.push({ soname: m[1]!, host: m[2]! });
      continue;
    }
    m = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line); // the dynamic loader
    if (m) libs.push({ soname: m[1]!, host: m[1]! });
    // linux-vdso.so.1 and anything else without a path: nothing to copy.
  }
  if (missing.length) {
    throw new ImageBuildError(
      'ERR_LIBRARIES',
      `${exe} needs libraries ldd cannot find: ${missing.join(', ')} (install them on the host, or pass the unpacked package's folder in libraryPath)`,
    );
  }
  return libs;
}

/** Maps a guest path to its stored form under merged /usr: /lib/x -> /usr/lib/x, /lib64/x -> /usr/lib64/x. */
export function mergedUsrPath(guest: string): string {
  const p = '/' + archivePath(guest);
  if (p === '/lib' || p === '/lib64') return `/usr${p}`;
  if (p.startsWith('/lib/') || p.startsWith('/lib64/')) return `/usr${p}`;
  return p;
}

// ---------------------------------------------------------------------------------------
// The build

export type ImageEntry =
  | { kind: 'dir'; guest: string; mode: number }
  | { kind: 'host'; guest: string; host: string; mode: number | undefined; strip?: boolean }
  | { kind: 'data'; guest: string; data: Uint8Array; mode: number }
  | { kind: 'symlink'; guest: string; target: string }
  | { kind: 'chr'; guest: string; major: number; minor: number; mode: number };

async function busyboxApplets(busybox: string): Promise<string[]> {
  const { stdout } = await run(busybox, ['--list-full'], { hint: 'busybox-static' });
  return stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}

/** What goes into an image, resolved: one entry per guest path, the modules in load order, and the cache key. */
export interface ImageContents {
  entries: ReadonlyMap<string, ImageEntry>;
  modules: ResolvedModule[];
  /** 16 hex digits: a hash of every entry (content fingerprints for host files). */
  key: string;
}

/**
 * Resolves a spec (busybox applets, executables with their libraries, modules with their
 * dependencies, files, /init) to the entries of an image, normalised to merged /usr,
 * with a cache key. Shared by the cpio and the squashfs writers; `format` goes into the key.
 */
export async function collectImageContents(spec: InitramfsSpec, format: string): Promise<ImageContents> {
  if (!/^[A-Za-z0-9_.-]+$/.test(spec.name)) throw new ImageBuildError('ERR_SPEC', `bad image name: ${spec.name}`);
  const entries: ImageEntry[] = [];

  // Base layout.
  for (const d of ['dev', 'proc', 'sys', 'run', 'etc', 'root', 'bin', 'sbin', 'usr/bin', 'usr/sbin', 'usr/lib', 'usr/lib64']) {
    entries.push({ kind: 'dir', guest: `/${d}`, mode: 0o755 });
  }
  entries.push({ kind: 'dir', guest: '/tmp', mode: 0o1777 });
  entries.push({ kind: 'symlink', guest: '/lib', target: 'usr/lib' });
  entries.push({ kind: 'symlink', guest: '/lib64', target: 'usr/lib64' });
  entries.push({ kind: 'chr', guest: '/dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ kind: 'chr', guest: '/dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ kind: 'chr', guest: '/dev/ttyS0', major: 4, minor: 64, mode: 0o600 });

  // Busybox and its applets.
  if (spec.busybox) {
    if (!existsSync(spec.busybox)) throw new ImageBuildError('ERR_SPEC', `busybox not found at ${spec.busybox}`);
    entries.push({ kind: 'host', guest: '/bin/busybox', host: spec.busybox, mode: 0o755 });
    for (const applet of await busyboxApplets(spec.busybox)) {
      const guest = '/' + archivePath(applet);
      if (guest !== '/bin/busybox') entries.push({ kind: 'symlink', guest, target: '/bin/busybox' });
    }
  }

  // Executables and their libraries.
  for (const exe of spec.executables ?? []) {
    if (!existsSync(exe.host)) throw new ImageBuildError('ERR_SPEC', `executable not found: ${exe.host}`);
    entries.push({ kind: 'host', guest: exe.guest ?? exe.host, host: exe.host, mode: 0o755, strip: exe.strip === true });
    for (const lib of await sharedLibraries(exe.host, exe.libraryPath)) {
      let guest = lib.host;
      for (const root of exe.libraryRoots ?? []) {
        if (lib.host.startsWith(root + '/')) guest = lib.host.slice(root.length);
      }
      entries.push({ kind: 'host', guest, host: lib.host, mode: 0o755 });
    }
  }

  // Kernel modules, and a modules.dep so busybox modprobe works in the guest too.
  let modules: ResolvedModule[] = [];
  if (spec.modules?.length) {
    if (!spec.kernel) throw new ImageBuildError('ERR_SPEC', 'modules were requested but no kernel was given');
    modules = await resolveModules(spec.kernel, spec.modules);
    for (const m of modules) entries.push({ kind: 'host', guest: m.guest, host: m.host, mode: 0o644 });
    const byName = new Map(modules.map((m) => [m.name, m]));
    const rel = (m: ResolvedModule): string => m.guest.slice(`/lib/modules/${spec.kernel!.version}/`.length);
    const allDeps = (m: ResolvedModule, acc: ResolvedModule[]): ResolvedModule[] => {
      for (const d of m.depends) {
        const dm = byName.get(d);
        if (dm && !acc.includes(dm)) {
          acc.push(dm);
          allDeps(dm, acc);
        }
      }
      return acc;
    };
    const dep = modules.map((m) => `${rel(m)}: ${allDeps(m, []).map(rel).join(' ')}`.trimEnd()).join('\n') + '\n';
    entries.push({ kind: 'data', guest: `/lib/modules/${spec.kernel.version}/modules.dep`, data: Buffer.from(dep), mode: 0o644 });
  }

  for (const d of spec.directories ?? []) entries.push({ kind: 'dir', guest: d.guest, mode: d.mode ?? 0o755 });
  for (const f of spec.files ?? []) {
    if (f.host !== undefined) {
      if (!existsSync(f.host)) throw new ImageBuildError('ERR_SPEC', `file not found: ${f.host} (for ${f.guest})`);
      entries.push({ kind: 'host', guest: f.guest, host: f.host, mode: f.mode, ...(f.strip ? { strip: true } : {}) });
    } else if (f.data !== undefined) {
      entries.push({ kind: 'data', guest: f.guest, data: typeof f.data === 'string' ? Buffer.from(f.data) : f.data, mode: f.mode ?? 0o644 });
    } else throw new ImageBuildError('ERR_SPEC', `file ${f.guest} has neither host nor data`);
  }
  for (const s of spec.symlinks ?? []) entries.push({ kind: 'symlink', guest: s.guest, target: s.target });

  const loadModulesScript = modules.map((m) => `insmod ${m.guest}`).join('\n');
  const init = typeof spec.init === 'function' ? spec.init({ modules, kernelVersion: spec.kernel?.version, loadModulesScript }) : spec.init;
  entries.push({ kind: 'data', guest: '/init', data: typeof init === 'string' ? Buffer.from(init) : init, mode: 0o755 });

  // Normalize paths (merged /usr) and drop exact duplicates; conflicting duplicates are an error.
  const final = new Map<string, ImageEntry>();
  for (const e of entries) {
    const guest = e.kind === 'symlink' && (e.guest === '/lib' || e.guest === '/lib64') ? e.guest : mergedUsrPath(e.guest);
    const n = { ...e, guest } as ImageEntry;
    const prev = final.get(guest);
    if (prev) {
      if (prev.kind === 'dir' && n.kind === 'dir') continue;
      if (prev.kind === 'host' && n.kind === 'host' && realpathSync(prev.host) === realpathSync(n.host)) continue;
      if (prev.kind === 'symlink' && prev.target === '/bin/busybox') {
        final.set(guest, n); // a real file wins over a busybox applet link
        continue;
      }
      if (n.kind === 'symlink' && n.target === '/bin/busybox') continue;
      throw new ImageBuildError('ERR_SPEC', `two different entries for ${guest} in image ${spec.name}`);
    }
    final.set(guest, n);
  }

  // The cache key.
  const h = createHash('sha256');
  h.update(`tsvirtio-image v${BUILDER_VERSION} ${format}\n`);
  for (const e of final.values()) {
    switch (e.kind) {
      case 'dir':
        h.update(`d ${e.guest} ${e.mode}\n`);
        break;
      case 'host':
        h.update(`f ${e.guest} ${e.mode ?? 'host'} ${e.strip ? 'strip ' : ''}${fileFingerprint(realpathSync(e.host))} ${statSync(e.host).mode}\n`);
        break;
      case 'data':
        h.update(`b ${e.guest} ${e.mode} ${createHash('sha256').update(e.data).digest('hex')}\n`);
        break;
      case 'symlink':
        h.update(`l ${e.guest} ${e.target}\n`);
        break;
      case 'chr':
        h.update(`c ${e.guest} ${e.major} ${e.minor} ${e.mode}\n`);
        break;
    }
  }
  return { entries: final, modules, key: h.digest('hex').slice(0, 16) };
}

/** Builds (or finds in the cache) an initramfs for `spec`. */
export async function buildInitramfs(spec: InitramfsSpec): Promise<InitramfsImage> {
  const t0 = Date.now();
  const { entries: final, modules, key } = await collectImageContents(spec, 'cpio');
  const outDir = spec.outDir ?? cacheDir('images');
  const path = join(outDir, `${spec.name}-${key}.cpio`);

  if (reuseCached(path)) {
    return { path, size: statSync(path).size, key, cached: true, buildMs: Date.now() - t0, modules };
  }

  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const w = new CpioWriter(tmp);
  try {
    // Directories first (sorted so parents come before children), then everything else.
    const all = [...final.values()];
    for (const e of all.filter((x) => x.kind === 'dir').sort((a, b) => a.guest.localeCompare(b.guest))) {
      w.directory(e.guest, (e as { mode: number }).mode);
    }
    for (const e of all) {
      switch (e.kind) {
        case 'dir':
          break;
        case 'host':
          w.fileFromHost(e.guest, realpathSync(e.host), e.mode ?? statSync(e.host).mode & 0o7777);
          break;
        case 'data':
          w.file(e.guest, e.data, e.mode);
          break;
        case 'symlink':
          w.symlink(e.guest, e.target);
          break;
        case 'chr':
          w.charDevice(e.guest, e.major, e.minor, e.mode);
          break;
      }
    }
    w.finish();
    renameSync(tmp, path);
  } catch (err) {
    w.abort();
    rmSync(tmp, { force: true });
    throw err;
  }
  pruneStale(outDir, spec.name, 'cpio', path, PRUNE_AGE_MS);
  return { path, size: statSync(path).size, key, cached: false, buildMs: Date.now() - t0, modules };
}
