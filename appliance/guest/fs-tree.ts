// Guest program: the virtio-fs driver (drivers/virtio-fs/driver), unchanged, on the
// virtio modern PCI transport (virtio device 26, served by QEMU's vhost-user-fs-pci and
// Debian's C virtiofsd), hugepage DMA memory and uio interrupts. It walks the whole
// share and prints what it saw as one line, `fs-tree-result: {json}`:
//   - entries: every path under the root with lstat's mode and size (symlinks: the
//     link's target, and stat's mode and size through the link);
//   - dirs: readdir of every directory (names, and the dirent types);
//   - files: SHA-256 of every regular file (and of every symlink's target) read with
//     readFile (one copy) and with readFileDma (DMA chunks), with the sizes read;
//   - errors: the error code/errno/syscall of operations that must fail (paths from
//     the command line, so the test decides them: --errors=<json>);
//   - concurrent: 64 reads started at once over all files (readFile and readFileDma
//     alternating), each with its SHA-256.
// The test (tests/guest-fs-tree.test.ts) compares all of it with the host's own view.
// Import only types from this file: importing it runs boot().
import { createHash } from 'node:crypto';
import { boot } from '../../kernel/guest/boot.js';
import { type FsDirent, type FsStats, VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';

const VIRTIO_ID_FS = 26;
const RESULT_MARKER = 'fs-tree-result: ';
const CONCURRENT_READS = 64;

export type ErrorOp = 'stat' | 'lstat' | 'readFile' | 'readFileDma' | 'readdir' | 'open' | 'readlink';
export interface ErrorCase {
  op: ErrorOp;
  path: string;
}
export interface ErrorOutcome extends ErrorCase {
  /** 'ok' when the operation did not fail. */
  code: string;
  errno: number | null;
  syscall: string | null;
}
export interface EntryView {
  mode: number;
  size: number;
  /** Symlinks only: readlink, and stat through the link. */
  target?: string;
  targetMode?: number;
  targetSize?: number;
}
export interface FileView {
  size: number;
  sha256: string;
  dmaSize: number;
  dmaSha256: string;
}
export interface TreeResult {
  tag: string;
  maxRead: number;
  entries: Record<string, EntryView>;
  dirs: Record<string, { names: string[]; types: Record<string, 'file' | 'dir' | 'symlink' | 'other'> }>;
  files: Record<string, FileView>;
  errors: ErrorOutcome[];
  concurrent: Array<{ path: string; method: 'readFile' | 'readFileDma'; size: number; sha256: string }>;
  interrupts: number;
  stats: Record<string, number>;
}

const direntType = (d: FsDirent): 'file' | 'dir' | 'symlink' | 'other' => (d.isFile() ? 'file' : d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'symlink' : 'other');
const join = (dir: string, name: string): string => (dir === '/' ? `/${name}` : `${dir}/${name}`);

async function sha256Dma(fs: VirtioFsDriver, path: string): Promise<{ size: number; sha256: string }> {
  const f = await fs.readFileDma(path);
  try {
    const h = createHash('sha256');
    let size = 0;
    for (const c of f.chunks) {
      h.update(c);
      size += c.length;
    }
    if (size !== f.size) throw new Error(`readFileDma ${path}: chunks hold ${size} bytes, size says ${f.size}`);
    return { size, sha256: h.digest('hex') };
  } finally {
    f.release();
  }
}

async function sha256Copy(fs: VirtioFsDriver, path: string): Promise<{ size: number; sha256: string }> {
  const data = await fs.readFile(path);
  return { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}

async function attempt(fs: VirtioFsDriver, c: ErrorCase): Promise<ErrorOutcome> {
  try {
    switch (c.op) {
      case 'stat':
        await fs.stat(c.path);
        break;
      case 'lstat':
        await fs.lstat(c.path);
        break;
      case 'readFile':
        await fs.readFile(c.path);
        break;
      case 'readFileDma':
        (await fs.readFileDma(c.path)).release();
        break;
      case 'readdir':
        await fs.readdir(c.path);
        break;
      case 'open':
        await (await fs.open(c.path)).close();
        break;
      case 'readlink':
        await fs.readlink(c.path);
        break;
    }
    return { ...c, code: 'ok', errno: null, syscall: null };
  } catch (e) {
    const err = e as { code?: unknown; errno?: unknown; syscall?: unknown };
    return { ...c, code: String(err.code ?? (e as Error).message), errno: typeof err.errno === 'number' ? err.errno : null, syscall: typeof err.syscall === 'string' ? err.syscall : null };
  }
}

function parseErrors(args: readonly string[]): ErrorCase[] {
  const a = args.find((x) => x.startsWith('--errors='));
  if (a === undefined) return [];
  return JSON.parse(Buffer.from(a.slice('--errors='.length), 'base64url').toString('utf8')) as ErrorCase[];
}

boot(
  'fs-tree',
  async (ctx) => {
    const errorCases = parseErrors(ctx.args);
    const t = ctx.openVirtioDevice(VIRTIO_ID_FS);
    const fs = await VirtioFsDriver.start(t);
    ctx.log(`mounted tag ${fs.tag}, FUSE 7.${fs.protocolMinor}, max read ${fs.maxRead}`);
    const result: TreeResult = { tag: fs.tag, maxRead: fs.maxRead, entries: {}, dirs: {}, files: {}, errors: [], concurrent: [], interrupts: 0, stats: {} };

    // The walk: readdir of each directory, lstat of each entry, recursion into directories.
    const readable: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      const dirents = await fs.readdir(dir, { withFileTypes: true });
      const names = dirents.map((d) => d.name).sort();
      const types: Record<string, 'file' | 'dir' | 'symlink' | 'other'> = {};
      for (const d of dirents) types[d.name] = direntType(d);
      result.dirs[dir] = { names, types };
      for (const name of names) {
        const path = join(dir, name);
        const st: FsStats = await fs.lstat(path);
        const view: EntryView = { mode: st.mode, size: st.size };
        if (st.isSymbolicLink()) {
          view.target = await fs.readlink(path);
          const through = await fs.stat(path);
          view.targetMode = through.mode;
          view.targetSize = through.size;
          if (through.isFile()) readable.push(path);
        } else if (st.isFile()) {
          readable.push(path);
        }
        result.entries[path] = view;
        if (st.isDirectory()) await walk(path);
      }
    };
    await walk('/');

    for (const path of readable) {
      const copy = await sha256Copy(fs, path);
      const dma = await sha256Dma(fs, path);
      result.files[path] = { size: copy.size, sha256: copy.sha256, dmaSize: dma.size, dmaSha256: dma.sha256 };
    }

    for (const c of errorCases) result.errors.push(await attempt(fs, c));

    // 64 reads at once, over every readable file in turn; the method alternates from one
    // read to the next and from one round over the files to the next, so that every file
    // is read both ways (the 16 MiB one too: two arena allocations at once).
    const jobs = Array.from({ length: CONCURRENT_READS }, (_, i) => {
      const path = readable[i % readable.length]!;
      const method = (i + Math.floor(i / readable.length)) % 2 === 0 ? ('readFile' as const) : ('readFileDma' as const);
      return (method === 'readFile' ? sha256Copy(fs, path) : sha256Dma(fs, path)).then((r) => ({ path, method, ...r }));
    });
    result.concurrent = await Promise.all(jobs);

    result.interrupts = t.interruptCount;
    result.stats = { ...fs.stats };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
    await fs.close();
    return 0;
  },
  // 48 MiB: the 16 MiB file read by readFileDma (one arena allocation), two of them at
  // once in the concurrent part, plus the driver's chunk pool and rings.
  { dmaPages: 24 },
);
