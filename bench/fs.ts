// virtio-fs read benchmark (level 1: no VM). One run, ratios side by side:
//   - our driver against the in-process device (worker thread) and, when available,
//     against Debian's virtiofsd through the vhost-user front-end transport;
//   - readFile (one copy from DMA chunks into a Buffer) vs readFileDma (zero copy);
//   - the bound: node:fs/promises readFile of the same host file.
// Files: a 133 KiB page (the webserver's case; concurrency 1 and 16) and a 16 MiB file
// (concurrency 1 and 4).
// Usage: npm run bench -- fs [--ms=1000] [--no-virtiofsd]
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { readFile as nodeReadFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addonAvailable } from '../kernel/native/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VhostUserFrontendTransport } from '../kernel/transport/vhost-user-frontend-transport.js';
import type { VirtioTransport } from '../kernel/transport/virtio-transport.js';
import { VirtioFsDriver } from '../drivers/virtio-fs/driver/index.js';
import { VIRTIO_ID_FS, encodeVirtioFsConfig } from '../drivers/virtio-fs/virtio-fs-config.js';
import { percentile, printTable, writeResults } from './report.js';

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const FILES = { 'page133k.html': 133 * 1024, 'big16m.bin': 16 * 1024 * 1024 };
/** Concurrency levels per file (16 readFileDma of 16 MiB would need 256 MiB of DMA memory). */
const CONCURRENCY: Record<string, number[]> = { 'page133k.html': [1, 16], 'big16m.bin': [1, 4] };

interface Row {
  [key: string]: string | number;
  backend: string;
  file: string;
  method: string;
  concurrency: number;
  ops_per_s: number;
  MBps: number;
  p50_us: number;
  p99_us: number;
}

/** Runs `op` with `concurrency` loops for about `ms`; returns rates and latency percentiles. */
async function measure(op: () => Promise<number>, concurrency: number, ms: number): Promise<{ ops: number; bytes: number; seconds: number; lat: number[] }> {
  await op(); // warm up
  const lat: number[] = [];
  let ops = 0;
  let bytes = 0;
  const start = performance.now();
  const deadline = start + ms;
  const loop = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      bytes += await op();
      lat.push((performance.now() - t0) * 1000);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return { ops, bytes, seconds: (performance.now() - start) / 1000, lat };
}

async function startVirtiofsd(shareDir: string, sock: string): Promise<{ child: ChildProcess; exited: Promise<void> }> {
  const child = spawn(VIRTIOFSD, [`--socket-path=${sock}`, '-o', `source=${shareDir}`, '-o', 'sandbox=chroot', '-o', 'cache=auto'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  while (!fs.existsSync(sock)) {
    if (child.exitCode !== null) throw new Error(`virtiofsd exited with ${child.exitCode}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, exited };
}

export default async function main(args: string[]): Promise<void> {
  const ms = Number(args.find((a) => a.startsWith('--ms='))?.slice(5) ?? 1000);
  const wantVirtiofsd = !args.includes('--no-virtiofsd') && fs.existsSync(VIRTIOFSD) && addonAvailable() && process.getuid?.() === 0;
  const dir = fs.mkdtempSync(join(tmpdir(), 'bench-fs-'));
  const shareDir = join(dir, 'share');
  fs.mkdirSync(shareDir);
  for (const [name, size] of Object.entries(FILES)) fs.writeFileSync(join(shareDir, name), randomBytes(size));
  const rows: Row[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  try {
    const backends: Array<{ name: string; make: () => Promise<VirtioTransport> }> = [
      {
        name: 'in-process device (worker)',
        make: async () => {
          const t = await InProcessTransport.worker({ module: new URL('../drivers/virtio-fs/device/worker-device.js', import.meta.url), options: { root: shareDir, tag: 'bench' } }, { memoryBytes: 128 << 20 });
          cleanups.push(() => t.close());
          return t;
        },
      },
    ];
    if (wantVirtiofsd) {
      backends.push({
        name: 'virtiofsd (vhost-user)',
        make: async () => {
          const sock = join(dir, 'virtiofsd.sock');
          const d = await startVirtiofsd(shareDir, sock);
          cleanups.push(async () => {
            d.child.kill('SIGTERM');
            await d.exited;
          });
          const t = await VhostUserFrontendTransport.connect(sock, { deviceId: VIRTIO_ID_FS, config: encodeVirtioFsConfig({ tag: 'bench', numRequestQueues: 1 }), numQueues: 2, maxQueueSize: 256, memoryBytes: 128 << 20 });
          cleanups.push(() => t.close());
          return t;
        },
      });
    }
    const add = (backend: string, file: string, method: string, concurrency: number, m: Awaited<ReturnType<typeof measure>>): void => {
      rows.push({
        backend,
        file,
        method,
        concurrency,
        ops_per_s: m.ops / m.seconds,
        MBps: m.bytes / m.seconds / 1e6,
        p50_us: percentile(m.lat, 50),
        p99_us: percentile(m.lat, 99),
      });
    };
    for (const file of Object.keys(FILES)) {
      for (const c of CONCURRENCY[file]!) add('host kernel', file, 'node:fs readFile (bound)', c, await measure(async () => (await nodeReadFile(join(shareDir, file))).length, c, ms));
    }
    for (const b of backends) {
      const transport = await b.make();
      const vfs = await VirtioFsDriver.start(transport, { queueSize: 256, chunkCount: 64 });
      cleanups.push(() => vfs.close());
      for (const file of Object.keys(FILES)) {
        for (const c of CONCURRENCY[file]!) {
          add(b.name, file, 'readFile (1 copy)', c, await measure(async () => (await vfs.readFile(file)).length, c, ms));
          add(b.name, file, 'readFileDma (0 copy)', c, await measure(async () => {
            const f = await vfs.readFileDma(file);
            f.release();
            return f.size;
          }, c, ms));
        }
      }
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
  printTable('virtio-fs reads (one run)', rows);
  // Ratios from this run: each method against the host bound and zero copy against one copy.
  const ratios: Array<Record<string, string | number>> = [];
  for (const r of rows) {
    if (r.backend === 'host kernel') continue;
    const bound = rows.find((x) => x.backend === 'host kernel' && x.file === r.file && x.concurrency === r.concurrency)!;
    const copy = rows.find((x) => x.backend === r.backend && x.file === r.file && x.concurrency === r.concurrency && x.method.startsWith('readFile ('))!;
    ratios.push({ backend: r.backend, file: r.file, method: r.method, concurrency: r.concurrency, vs_node_fs: r.MBps / bound.MBps, vs_one_copy: r.MBps / copy.MBps });
  }
  printTable('ratios (MB/s over MB/s, same run)', ratios);
  console.log(`\nresults: ${writeResults('fs', { ms, rows, ratios })}`);
}
