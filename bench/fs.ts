// virtio-fs read benchmark (level 1: no VM). One run, ratios side by side:
//   - our driver against the in-process device (worker thread) and, when available,
//     against Debian's virtiofsd through the vhost-user front-end transport;
//   - readFile (one copy from DMA chunks into a Buffer) vs readFileDma (zero copy);
//   - the bound: node:fs/promises readFile of the same host file.
// Files: a 133 KiB page (the webserver's case; concurrency 1 and 16) and a 16 MiB file
// (concurrency 1 and 4).
// QEMU section (level 2, after the in-process rows): one node guest with two virtio-fs
// devices on the same folder (two virtiofsd): our driver on one (appliance/guest/
// fs-bench.ts on the PCI transport), the Linux kernel's virtiofs driver on the other
// (virtio_pci, fuse, virtiofs; mount -t virtiofs, node:fs), passes interleaved: a 16 MiB
// file read with 128 KiB reads (MB/s) and 1000 small files (files/s), timed inside the
// guest, as ratios ours/kernel.
// Usage: npm run bench -- fs [--ms=1000] [--no-virtiofsd] [--no-qemu | --qemu-only]
//        [--passes=3] [--rounds=1] (rounds: boots, each swapping the two devices)
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { readFile as nodeReadFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { launchQemu, qemuAvailable, type QemuInstance } from '../appliance/qemu/launch.js';
// Types only: importing the guest program would run its boot().
import type { BenchResult as GuestBenchResult } from '../appliance/guest/fs-bench.js';
import { addonAvailable } from '../kernel/native/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VhostUserFrontendTransport } from '../kernel/transport/vhost-user-frontend-transport.js';
import type { VirtioTransport } from '../kernel/transport/virtio-transport.js';
import { VirtioFsDriver } from '../drivers/virtio-fs/driver/index.js';
import { VIRTIO_ID_FS, encodeVirtioFsConfig } from '../drivers/virtio-fs/virtio-fs-config.js';
import { percentile, printTable, writeResults } from './report.js';
import { rejectUnknownFlags } from './usage.js';

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
      const n = await op(); // not `bytes += await op()`: that reads bytes before the await and loses the other loops' updates
      bytes += n;
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

const FLAGS = ['--ms=', '--qemu-only', '--no-qemu', '--passes=', '--rounds=', '--no-virtiofsd'];
export const usage = 'npm run bench -- fs [--ms=MS] [--no-virtiofsd] [--qemu-only | --no-qemu] [--passes=N] [--rounds=N]';

export default async function main(args: string[]): Promise<void> {
  rejectUnknownFlags(args, FLAGS);
  const ms = Number(args.find((a) => a.startsWith('--ms='))?.slice(5) ?? 1000);
  const qemuOnly = args.includes('--qemu-only');
  const inProcess = qemuOnly ? null : await inProcessSection(args, ms);
  let qemu: QemuSection | null = null;
  if (!args.includes('--no-qemu')) {
    const passes = Number(args.find((a) => a.startsWith('--passes='))?.slice(9) ?? 3);
    const rounds = Number(args.find((a) => a.startsWith('--rounds='))?.slice(9) ?? 1);
    qemu = await qemuSection(passes, rounds);
  }
  console.log(`\nresults: ${writeResults('fs', { ms, ...(inProcess ?? {}), ...(qemu ? { qemu } : {}) })}`);
}

async function inProcessSection(args: string[], ms: number): Promise<{ rows: Row[]; ratios: Array<Record<string, string | number>> }> {
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
  return { rows, ratios };
}

// ---------------------------------------------------------------------------------------
// QEMU section: our driver vs the Linux kernel's virtiofs driver, same guest, same share.

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const GUEST_BUNDLE = join(repoRoot, 'dist', 'bundles', 'fs-bench.js');
const GUEST_ADDON = join(repoRoot, 'build', 'Release', 'tsvirtio.node');
const GUEST_RESULT_MARKER = 'fs-bench-result: ';
/** The kernel's own driver: virtio_pci binds the device, virtiofs (+ fuse) mounts it. */
const KERNEL_FS_MODULES = ['virtio_pci', 'fuse', 'virtiofs'];
const QEMU_BIG = { name: 'big16m.bin', size: 16 * 1024 * 1024 };
const QEMU_SMALL = { dir: 'small', count: 1000, size: 1024 };

interface QemuRow {
  [key: string]: string | number;
  workload: string;
  method: string;
  passes: number;
  median_ms: number;
  MBps: number;
  files_per_s: number;
}

interface QemuSection {
  passes: number;
  rounds: number;
  files: { big: typeof QEMU_BIG; small: typeof QEMU_SMALL };
  rows: QemuRow[];
  /** Each row over the kernel's cold (page cache dropped) async row of its workload (ratio of medians, and of pass pairs). */
  ratios: Array<Record<string, string | number>>;
  guests: Array<{ drivers: string; elapsedMs: number; info: Record<string, unknown>; passesMs: Record<string, number[]> }>;
  notes: string[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * One boot with two virtio-fs devices, each served by its own virtiofsd on the same
 * folder (tags bench-a, bench-b): the kernel (virtio_pci, fuse, virtiofs) binds both, the
 * guest program takes device #oursIndex for our driver and mounts the other one's tag,
 * and interleaves the two drivers' passes (same load on both sides).
 */
async function bootBenchGuest(oursIndex: 0 | 1, shareDir: string, dir: string, passes: number): Promise<{ result: GuestBenchResult; elapsedMs: number }> {
  const tags = ['bench-a', 'bench-b'] as const;
  const image = await buildNodeGuest({
    main: GUEST_BUNDLE,
    name: 'node-guest-fs-bench',
    args: ['--drivers=both', `--ours-index=${oursIndex}`, `--tag=${tags[1 - oursIndex]}`, `--big=/${QEMU_BIG.name}`, `--small=/${QEMU_SMALL.dir}`, `--passes=${passes}`],
    files: [{ guest: '/app/tsvirtio.node', host: GUEST_ADDON }],
    modules: KERNEL_FS_MODULES,
  });
  const socks = tags.map((t) => join(dir, `virtiofsd-${t}.sock`));
  const daemons: Array<Awaited<ReturnType<typeof startVirtiofsd>>> = [];
  let qemu: QemuInstance | null = null;
  try {
    for (const s of socks) {
      fs.rmSync(s, { force: true });
      daemons.push(await startVirtiofsd(shareDir, s));
    }
    qemu = launchQemu({
      kernel: image.kernel,
      initrd: image.initrd,
      append: image.append,
      virtiofs: { socket: socks[0]!, tag: tags[0] },
      extraArgs: ['-chardev', `socket,id=fs1,path=${socks[1]!.replace(/,/g, ',,')}`, '-device', `vhost-user-fs-pci,chardev=fs1,tag=${tags[1]}`],
      timeoutMs: 30 * 60_000, // safety net, not a measurement
    });
    console.log(`[fs bench] QEMU pid ${qemu.pid}: our driver on device #${oursIndex} (${tags[oursIndex]}), the kernel's on ${tags[1 - oursIndex]}`);
    const exit = await qemu.exited;
    const text = qemu.console();
    const line = text.split('\n').find((l) => l.startsWith(GUEST_RESULT_MARKER));
    if (exit.guestStatus !== 0 || line === undefined) throw new Error(`fs-bench guest failed: status ${exit.status}${exit.timedOut ? ' (timed out)' : ''}\n${text.slice(-3000)}\n${exit.stderr}`);
    return { result: JSON.parse(line.slice(GUEST_RESULT_MARKER.length)) as GuestBenchResult, elapsedMs: exit.elapsedMs };
  } finally {
    if (qemu?.running) await qemu.stop();
    for (const d of daemons) {
      if (d.child.exitCode === null && d.child.signalCode === null) {
        d.child.kill('SIGTERM');
        await d.exited;
      }
    }
  }
}

async function qemuSection(passes: number, rounds: number): Promise<QemuSection | null> {
  const missing = [
    qemuAvailable() ? null : 'qemu-system-x86_64',
    fs.existsSync(VIRTIOFSD) ? null : VIRTIOFSD,
    fs.existsSync(GUEST_BUNDLE) ? null : `${GUEST_BUNDLE} (node build.mjs)`,
    fs.existsSync(GUEST_ADDON) ? null : GUEST_ADDON,
  ].filter((x) => x !== null);
  if (missing.length > 0) {
    console.log(`\nQEMU section skipped: missing ${missing.join(', ')}`);
    return null;
  }
  const dir = fs.mkdtempSync(join(tmpdir(), 'bench-fs-qemu-'));
  const shareDir = join(dir, 'share');
  fs.mkdirSync(join(shareDir, QEMU_SMALL.dir), { recursive: true });
  fs.writeFileSync(join(shareDir, QEMU_BIG.name), randomBytes(QEMU_BIG.size));
  for (let i = 0; i < QEMU_SMALL.count; i++) fs.writeFileSync(join(shareDir, QEMU_SMALL.dir, `f${String(i).padStart(4, '0')}.txt`), randomBytes(QEMU_SMALL.size));
  const guests: QemuSection['guests'] = [];
  /** workload + method -> passes (ms) over every round, and bytes/files per pass. */
  const acc = new Map<string, { workload: string; method: string; bytes: number; files: number; ms: number[] }>();
  try {
    // Each round is one boot; rounds swap which device (and virtiofsd) each driver gets.
    for (let r = 0; r < rounds; r++) {
      const { result, elapsedMs } = await bootBenchGuest(r % 2 === 0 ? 1 : 0, shareDir, dir, passes);
      const passesMs: Record<string, number[]> = {};
      for (const row of result.rows) {
        const key = `${row.workload}\0${row.method}`;
        const a = acc.get(key) ?? { workload: row.workload, method: row.method, bytes: row.bytes, files: row.files, ms: [] };
        a.ms.push(...row.passesMs);
        acc.set(key, a);
        passesMs[`${row.workload} / ${row.method}`] = row.passesMs.map((x) => Math.round(x * 10) / 10);
      }
      guests.push({ drivers: result.drivers, elapsedMs, info: result.info, passesMs });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const rows: QemuRow[] = [...acc.values()].map((a) => {
    const m = median(a.ms);
    return { workload: a.workload, method: a.method, passes: a.ms.length, median_ms: m, MBps: a.bytes / (m / 1000) / 1e6, files_per_s: a.files / (m / 1000) };
  });
  printTable(`QEMU (TCG) guest reads through virtiofsd, timed in the guest (median of passes; ${QEMU_BIG.size >> 20} MiB file with 128 KiB reads, ${QEMU_SMALL.count} files of ${QEMU_SMALL.size} B)`, rows);
  const ratios: QemuSection['ratios'] = [];
  for (const r of rows) {
    const base = rows.find((x) => x.workload === r.workload && x.method.startsWith('kernel: ') && !x.method.includes('warm'));
    if (base === undefined || r === base) continue;
    // Paired: the two methods' passes of the same index ran back to back in the same
    // boot (interleaved), so each pair saw about the same load.
    const a = acc.get(`${r.workload}\0${r.method}`)!.ms;
    const b = acc.get(`${base.workload}\0${base.method}`)!.ms;
    const paired = a.map((ms, i) => b[i]! / ms).filter((x) => Number.isFinite(x));
    ratios.push({
      workload: r.workload,
      method: r.method,
      vs_kernel: r.median_ms > 0 ? base.median_ms / r.median_ms : NaN,
      paired_median: median(paired),
      paired_min: Math.min(...paired),
      paired_max: Math.max(...paired),
      kernel_method: base.method,
    });
  }
  printTable('QEMU ratios (rate over the kernel driver\'s rate, page cache dropped; > 1 means ours is faster): of the medians, and the median/min/max of per-pass ratios', ratios);
  return {
    passes,
    rounds,
    files: { big: QEMU_BIG, small: QEMU_SMALL },
    rows,
    ratios,
    guests,
    notes: [
      'TCG (no KVM) on a shared 2-core machine, heavily loaded by others: passes vary by 2-10x; both drivers run in the same boot, their passes interleaved, so a load change hits both sides alike.',
      'kernel rows drop the page cache (echo 1 > /proc/sys/vm/drop_caches) before every measured pass; "warm" rows do not. With virtiofsd cache=auto the kernel still drops a file\'s cached pages at each open (virtiofsd sets keep_cache only with cache=always), so "warm" keeps dentries and attributes, not data.',
      'virtiofsd: -o sandbox=chroot -o cache=auto, fresh per boot; timing with performance.now() inside the guest, warm-up pass not counted.',
    ],
  };
}
