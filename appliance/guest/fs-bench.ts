// Guest program for the QEMU section of bench/fs.ts: file reads timed inside the guest
// (performance.now() around the reads), printed as one line `fs-bench-result: {json}`.
//   --drivers=ours    our virtio-fs driver on the PCI transport (uio, hugepage DMA)
//   --drivers=kernel  the Linux kernel's virtiofs driver (the image loads virtio_pci,
//                     fuse, virtiofs): `mount -t virtiofs TAG /mnt`, then node:fs
//   --drivers=both    two virtio-fs devices (two virtiofsd on the same folder): the
//                     --ours-index'th (default 1) is taken from virtio-pci for our
//                     driver, the kernel mounts the other tag; the passes of the two
//                     drivers are interleaved, so both see the same machine load.
// Workloads (the same files, the same order, for both drivers):
//   seq128k   one 16 MiB file, open + sequential 128 KiB reads until EOF + close
//             (ours: into a DMA buffer, zero copy, and into a plain Buffer, one copy;
//             kernel: FileHandle.read (libuv thread pool) and fs.readSync)
//   readFile  the same file, whole (ours: readFile with its read-ahead; kernel: readFile)
//   small-cN  1000 small files, readFile each, N at a time (1 and 16)
// Each method runs once unmeasured (warm-up: JIT, lookups), then --passes=N times; in
// pass p the methods of a workload run in an order rotated by p.
// For the kernel the page cache is dropped (echo 1 > /proc/sys/vm/drop_caches) before
// every measured pass so that each pass reads through the device, as ours does (our
// driver has no data cache); the `warm` rows skip that (with virtiofsd cache=auto the
// kernel drops a file's pages at open anyway: they keep dentries and attributes only).
// Args: --drivers=ours|kernel|both --tag=TAG (kernel mount; with both: the tag that is
// not ours) --big=PATH --small=DIR --passes=N --ours-index=I
import { execFileSync } from 'node:child_process';
import * as nodeFs from 'node:fs';
import { boot } from '../../kernel/guest/boot.js';
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';

const VIRTIO_ID_FS = 26;
const RESULT_MARKER = 'fs-bench-result: ';
const READ_SIZE = 128 * 1024;
const SMALL_CONCURRENCY = [1, 16];

export interface BenchRow {
  /** Workload: seq128k, readFile, small-c1, small-c16. */
  workload: string;
  /** Which driver, and how the reads were done. */
  method: string;
  /** Bytes and files per pass (checked to be the same in every pass). */
  bytes: number;
  files: number;
  /** Milliseconds per measured pass, inside the guest. */
  passesMs: number[];
}
export interface BenchResult {
  drivers: 'ours' | 'kernel' | 'both';
  rows: BenchRow[];
  info: Record<string, unknown>;
}

interface Method {
  workload: string;
  method: string;
  /** Untimed, before each measured pass (e.g. drop the page cache). */
  before: () => void;
  pass: () => Promise<{ bytes: number; files: number }>;
}

function arg(args: readonly string[], name: string, dflt: string): string {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? dflt : a.slice(name.length + 3);
}

/** Runs `fn` over `items` with at most `concurrency` at once; sums what they return. */
async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<number>): Promise<number> {
  let next = 0;
  let total = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const n = await fn(items[next++]!); // not `total += await ...`: that reads total before the await
      total += n;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return total;
}

/** Every method warmed up once, then `passes` measured passes, methods of a workload interleaved. */
async function runAll(methods: Method[], passes: number): Promise<BenchRow[]> {
  const workloads = [...new Set(methods.map((m) => m.workload))];
  const rows = new Map<Method, BenchRow>();
  for (const w of workloads) {
    const group = methods.filter((m) => m.workload === w);
    for (const m of group) {
      await m.pass(); // warm-up
      rows.set(m, { workload: m.workload, method: m.method, bytes: 0, files: 0, passesMs: [] });
    }
    for (let p = 0; p < passes; p++) {
      for (let k = 0; k < group.length; k++) {
        const m = group[(k + p) % group.length]!;
        const row = rows.get(m)!;
        m.before();
        const t0 = performance.now();
        const r = await m.pass();
        row.passesMs.push(performance.now() - t0);
        if (row.passesMs.length > 1 && (r.bytes !== row.bytes || r.files !== row.files)) {
          throw new Error(`${m.workload}/${m.method}: pass ${p} read ${r.bytes} bytes in ${r.files} files, an earlier pass ${row.bytes} in ${row.files}`);
        }
        row.bytes = r.bytes;
        row.files = r.files;
      }
    }
  }
  return [...rows.values()];
}

boot(
  'fs-bench',
  async (ctx) => {
    const drivers = arg(ctx.args, 'drivers', 'ours');
    const tag = arg(ctx.args, 'tag', 'bench');
    const big = arg(ctx.args, 'big', '/big16m.bin');
    const smallDir = arg(ctx.args, 'small', '/small');
    const passes = Number(arg(ctx.args, 'passes', '3'));
    const oursIndex = Number(arg(ctx.args, 'ours-index', drivers === 'both' ? '1' : '0'));
    if (drivers !== 'ours' && drivers !== 'kernel' && drivers !== 'both') {
      ctx.log(`--drivers must be ours, kernel or both, not ${drivers}`);
      return 2;
    }
    const methods: Method[] = [];
    const info: Record<string, unknown> = {};
    const closers: Array<() => Promise<void> | void> = [];
    const nothing = (): void => {};

    if (drivers === 'ours' || drivers === 'both') {
      // With both, openVirtioDevice unbinds this function from virtio-pci first.
      const t = ctx.openVirtioDevice(VIRTIO_ID_FS, { index: oursIndex });
      const fs = await VirtioFsDriver.start(t, { queueSize: 256 });
      ctx.log(`ours: tag ${fs.tag}, max read ${fs.maxRead}`);
      if (drivers === 'both' && fs.tag === tag) throw new Error(`device #${oursIndex} has the tag ${tag} the kernel is to mount: pass the other device's --ours-index`);
      info['oursTag'] = fs.tag;
      info['maxRead'] = fs.maxRead;
      const dmaBuf = t.dma.allocate(READ_SIZE, 4096);
      const plainBuf = Buffer.alloc(READ_SIZE);
      const seq = (buf: Uint8Array) => async (): Promise<{ bytes: number; files: number }> => {
        const h = await fs.open(big);
        let pos = 0;
        try {
          for (;;) {
            const { bytesRead } = await h.read(buf, 0, READ_SIZE, pos);
            if (bytesRead === 0) break;
            pos += bytesRead;
          }
        } finally {
          await h.close();
        }
        return { bytes: pos, files: 1 };
      };
      methods.push({ workload: 'seq128k', method: 'ours: FileHandle.read into DMA memory (0 copy)', before: nothing, pass: seq(dmaBuf) });
      methods.push({ workload: 'seq128k', method: 'ours: FileHandle.read into a Buffer (1 copy)', before: nothing, pass: seq(plainBuf) });
      methods.push({ workload: 'readFile', method: 'ours: readFile (read-ahead 4)', before: nothing, pass: async () => ({ bytes: (await fs.readFile(big)).length, files: 1 }) });
      const names = ((await fs.readdir(smallDir)) as string[]).sort().map((n) => `${smallDir}/${n}`);
      for (const c of SMALL_CONCURRENCY) {
        methods.push({ workload: `small-c${c}`, method: 'ours: readFile', before: nothing, pass: async () => ({ bytes: await pool(names, c, async (p) => (await fs.readFile(p)).length), files: names.length }) });
      }
      closers.push(async () => {
        info['interrupts'] = t.interruptCount;
        info['stats'] = { ...fs.stats };
        t.dma.free(dmaBuf);
        await fs.close();
      });
    }
    if (drivers === 'kernel' || drivers === 'both') {
      nodeFs.mkdirSync('/mnt', { recursive: true });
      execFileSync('mount', ['-t', 'virtiofs', tag, '/mnt'], { stdio: 'inherit' });
      ctx.log(`kernel: mounted tag ${tag} at /mnt`);
      info['kernelTag'] = tag;
      const dropCaches = (): void => nodeFs.writeFileSync('/proc/sys/vm/drop_caches', '1');
      const bigPath = `/mnt${big}`;
      const buf = Buffer.alloc(READ_SIZE);
      const seqAsync = async (): Promise<{ bytes: number; files: number }> => {
        const h = await nodeFs.promises.open(bigPath, 'r');
        let pos = 0;
        try {
          for (;;) {
            const { bytesRead } = await h.read(buf, 0, READ_SIZE, pos);
            if (bytesRead === 0) break;
            pos += bytesRead;
          }
        } finally {
          await h.close();
        }
        return { bytes: pos, files: 1 };
      };
      const seqSync = async (): Promise<{ bytes: number; files: number }> => {
        const fd = nodeFs.openSync(bigPath, 'r');
        let pos = 0;
        try {
          for (;;) {
            const n = nodeFs.readSync(fd, buf, 0, READ_SIZE, pos);
            if (n === 0) break;
            pos += n;
          }
        } finally {
          nodeFs.closeSync(fd);
        }
        return { bytes: pos, files: 1 };
      };
      methods.push({ workload: 'seq128k', method: 'kernel: FileHandle.read', before: dropCaches, pass: seqAsync });
      methods.push({ workload: 'seq128k', method: 'kernel: fs.readSync', before: dropCaches, pass: seqSync });
      methods.push({ workload: 'seq128k', method: 'kernel: FileHandle.read, page cache warm', before: nothing, pass: seqAsync });
      methods.push({ workload: 'readFile', method: 'kernel: fs.promises.readFile', before: dropCaches, pass: async () => ({ bytes: (await nodeFs.promises.readFile(bigPath)).length, files: 1 }) });
      const names = nodeFs.readdirSync(`/mnt${smallDir}`).sort().map((n) => `/mnt${smallDir}/${n}`);
      const readAll = (c: number) => async (): Promise<{ bytes: number; files: number }> => ({ bytes: await pool(names, c, async (p) => (await nodeFs.promises.readFile(p)).length), files: names.length });
      for (const c of SMALL_CONCURRENCY) methods.push({ workload: `small-c${c}`, method: 'kernel: fs.promises.readFile', before: dropCaches, pass: readAll(c) });
      methods.push({ workload: 'small-c1', method: 'kernel: fs.promises.readFile, page cache warm', before: nothing, pass: readAll(1) });
      closers.push(() => {
        execFileSync('umount', ['/mnt'], { stdio: 'inherit' });
      });
    }
    const rows = await runAll(methods, passes);
    for (const c of closers) await c();
    const result: BenchResult = { drivers, rows, info };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
    return 0;
  },
  { dmaPages: process.argv.includes('--drivers=kernel') ? 1 : 8 },
);
