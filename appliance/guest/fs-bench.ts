// Guest program for the QEMU section of bench/fs.ts: file reads timed inside the guest
// (performance.now() around the reads), printed as one line `fs-bench-result: {json}`.
//   --drivers=ours    our virtio-fs driver on the PCI transport (uio, hugepage DMA)
//   --drivers=kernel  the Linux kernel's virtiofs driver (the image loads virtio_pci,
//                     fuse, virtiofs): `mount -t virtiofs TAG /mnt`, then node:fs
// Workloads (the same files, the same order, in both modes):
//   seq128k   one 16 MiB file, open + sequential 128 KiB reads until EOF + close
//             (ours: into a DMA buffer, zero copy, and into a plain Buffer, one copy;
//             kernel: FileHandle.read (libuv thread pool) and fs.readSync)
//   readFile  the same file, whole (ours: readFile with its read-ahead; kernel: readFile)
//   small     1000 small files, readFile each, one at a time and 16 at a time
// Each workload runs once unmeasured (warm-up: JIT, lookups), then --passes=N times.
// For the kernel the page cache is dropped (echo 1 > /proc/sys/vm/drop_caches) before
// every measured pass so that each pass reads through the device, as ours does (our
// driver has no data cache); the `warm` rows skip that (with virtiofsd cache=auto the
// kernel drops a file's pages at open anyway: they keep dentries and attributes only).
// Args: --drivers=ours|kernel --tag=TAG --big=PATH --small=DIR --passes=N
import { execFileSync } from 'node:child_process';
import * as nodeFs from 'node:fs';
import { boot } from '../../kernel/guest/boot.js';
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';

const VIRTIO_ID_FS = 26;
const RESULT_MARKER = 'fs-bench-result: ';
const READ_SIZE = 128 * 1024;
const SMALL_CONCURRENCY = 16;

export interface BenchRow {
  /** Workload: seq128k, readFile, small-c1, small-c16. */
  workload: string;
  /** How the reads were done (driver and method). */
  method: string;
  /** Bytes and files per pass (checked to be the same in every pass). */
  bytes: number;
  files: number;
  /** Milliseconds per measured pass, inside the guest. */
  passesMs: number[];
}
export interface BenchResult {
  drivers: 'ours' | 'kernel';
  rows: BenchRow[];
  info: Record<string, unknown>;
}

function arg(args: readonly string[], name: string, dflt: string): string {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? dflt : a.slice(name.length + 3);
}

async function runWorkload(rows: BenchRow[], workload: string, method: string, passes: number, before: () => void, pass: () => Promise<{ bytes: number; files: number }>): Promise<void> {
  await pass(); // warm-up
  const row: BenchRow = { workload, method, bytes: 0, files: 0, passesMs: [] };
  for (let i = 0; i < passes; i++) {
    before();
    const t0 = performance.now();
    const r = await pass();
    row.passesMs.push(performance.now() - t0);
    if (i > 0 && (r.bytes !== row.bytes || r.files !== row.files)) throw new Error(`${workload}/${method}: pass ${i} read ${r.bytes} bytes in ${r.files} files, pass 0 ${row.bytes} in ${row.files}`);
    row.bytes = r.bytes;
    row.files = r.files;
  }
  rows.push(row);
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

boot(
  'fs-bench',
  async (ctx) => {
    const drivers = arg(ctx.args, 'drivers', 'ours');
    const tag = arg(ctx.args, 'tag', 'bench');
    const big = arg(ctx.args, 'big', '/big16m.bin');
    const smallDir = arg(ctx.args, 'small', '/small');
    const passes = Number(arg(ctx.args, 'passes', '3'));
    const rows: BenchRow[] = [];
    const info: Record<string, unknown> = {};
    const nothing = (): void => {};
    if (drivers !== 'ours' && drivers !== 'kernel') {
      ctx.log(`--drivers must be ours or kernel, not ${drivers}`);
      return 2;
    }

    if (drivers === 'ours') {
      const t = ctx.openVirtioDevice(VIRTIO_ID_FS);
      const fs = await VirtioFsDriver.start(t, { queueSize: 256 });
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
      await runWorkload(rows, 'seq128k', 'ours: FileHandle.read into DMA memory (0 copy)', passes, nothing, seq(dmaBuf));
      await runWorkload(rows, 'seq128k', 'ours: FileHandle.read into a Buffer (1 copy)', passes, nothing, seq(plainBuf));
      await runWorkload(rows, 'readFile', 'ours: readFile (read-ahead 4)', passes, nothing, async () => ({ bytes: (await fs.readFile(big)).length, files: 1 }));
      const names = ((await fs.readdir(smallDir)) as string[]).sort().map((n) => `${smallDir}/${n}`);
      for (const c of [1, SMALL_CONCURRENCY]) {
        await runWorkload(rows, `small-c${c}`, 'ours: readFile', passes, nothing, async () => ({ bytes: await pool(names, c, async (p) => (await fs.readFile(p)).length), files: names.length }));
      }
      info['interrupts'] = t.interruptCount;
      info['stats'] = { ...fs.stats };
      t.dma.free(dmaBuf);
      await fs.close();
    } else {
      nodeFs.mkdirSync('/mnt', { recursive: true });
      execFileSync('mount', ['-t', 'virtiofs', tag, '/mnt'], { stdio: 'inherit' });
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
      await runWorkload(rows, 'seq128k', 'kernel: FileHandle.read', passes, dropCaches, seqAsync);
      await runWorkload(rows, 'seq128k', 'kernel: fs.readSync', passes, dropCaches, seqSync);
      await runWorkload(rows, 'seq128k', 'kernel: FileHandle.read, page cache warm', passes, nothing, seqAsync);
      await runWorkload(rows, 'readFile', 'kernel: fs.promises.readFile', passes, dropCaches, async () => ({ bytes: (await nodeFs.promises.readFile(bigPath)).length, files: 1 }));
      const names = nodeFs.readdirSync(`/mnt${smallDir}`).sort().map((n) => `/mnt${smallDir}/${n}`);
      for (const c of [1, SMALL_CONCURRENCY]) {
        await runWorkload(rows, `small-c${c}`, 'kernel: fs.promises.readFile', passes, dropCaches, async () => ({ bytes: await pool(names, c, async (p) => (await nodeFs.promises.readFile(p)).length), files: names.length }));
      }
      await runWorkload(rows, `small-c1`, 'kernel: fs.promises.readFile, page cache warm', passes, nothing, async () => ({ bytes: await pool(names, 1, async (p) => (await nodeFs.promises.readFile(p)).length), files: names.length }));
      execFileSync('umount', ['/mnt'], { stdio: 'inherit' });
    }
    const result: BenchResult = { drivers, rows, info };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
    return 0;
  },
  { dmaPages: process.argv.includes('--drivers=kernel') ? 1 : 8 },
);
