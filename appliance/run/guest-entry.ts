// The guest program of `npm start` and of the appliance benchmark (bundled to
// dist/bundles/appliance.js, booted as /app/main.js). The same webserver and ping-pong
// code on one of two stacks:
//   --drivers=ours    our TypeScript vsock + virtio-fs drivers on the virtio-mmio
//                     (microvm) or PCI (q35) transport (one DMA arena: file bytes read by FUSE_READ go out as vsock
//                     transmit descriptors), with --tx-mode=auto|two-copy|single-copy|zero-copy;
//   --drivers=kernel  the Linux kernel's own drivers: AF_VSOCK sockets through the addon
//                     and the virtiofs share mounted at /mnt, read with node:fs.
// Other flags: --port=N (vsock port of the webserver, default 80), --pingpong-port=N
// (default 5000), --tag=TAG (virtiofs tag, default site), --no-cache, --log,
// --profile-port=N (CPU profiles on demand, profile-service.ts), --poll-window-ms=N
// (ours: poll the devices this long after they go quiet before sleeping on interrupts;
// 0 = interrupts only; default DEFAULT_POLL_WINDOW_MS), --dma-pages=N (2 MiB DMA pages,
// default DEFAULT_DMA_PAGES; the file cache gets what the drivers leave of them).
// Prints "appliance-ready: ..." once both services listen; runs until SIGTERM/SIGINT.
// A bad flag: "appliance: <what is wrong>" and exit status 2, before boot().
//
// Started as `node main.js FLAGS` (the ESM bundle dist/bundles/appliance.js), or from a V8
// startup snapshot of the script bundle dist/bundles/appliance.cjs
// (`node --snapshot-blob BLOB -- FLAGS`; kernel/guest/startup-snapshot.ts): then the
// module top level below ran when the snapshot was built, and startProgram() runs main()
// in the process started from the blob. So nothing at top level may touch the system,
// process.argv or the addon; child_process and inspector are imported where used.
import { mkdirSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import { VsockDriver } from '../../drivers/virtio-vsock/index.js';
import type { TxMode } from '../../drivers/virtio-vsock/driver/connection.js';
import { type RingChoice, parseRingChoice } from '../../kernel/virtqueue/ring.js';
import { boot } from '../../kernel/guest/boot.js';
import { startProgram } from '../../kernel/guest/startup-snapshot.js';
import { runPingPong } from '../pingpong/echo-server.js';
import { runWebserver } from '../webserver/run-guest.js';
import { NodeSiteFiles } from '../webserver/files/node-site-files.js';
import { VirtioFsSiteFiles } from '../webserver/files/virtio-fs-site-files.js';
import { vsockBufferAllocator, vsockListen, vsockListenRaw } from '../webserver/listen/vsock-adapters.js';
import { runBulkServices } from './bulk-services.js';
import { AUTO_ZERO_COPY_MIN_BYTES, DEFAULT_POLL_WINDOW_MS, TX_MODES as GUEST_TX_MODES } from './guest-defaults.js';
import { kernelVsockListen } from './kernel-vsock.js';
import { runProfileService } from './profile-service.js';

/** Throughput services for bench/guest.ts: sink (host -> guest) and source (guest -> host). */
export const BULK_SINK_PORT = 6000;
export const BULK_SOURCE_PORT = 6001;

export const READY_MARKER = 'appliance-ready:';
const VIRTIO_ID_VSOCK = 19;
const VIRTIO_ID_FS = 26;
const TX_MODES: readonly TxMode[] = GUEST_TX_MODES;

interface EntryArgs {
  drivers: 'ours' | 'kernel';
  txMode: TxMode;
  /** The vsock rings: auto (packed when the device offers it), split or packed (virtio 1.2 2.7 / 2.8). */
  ring: RingChoice;
  port: number;
  pingPongPort: number;
  tag: string;
  cache: boolean;
  /** Largest file the webserver's small-file cache keeps (default: the webserver's, 64 KiB). */
  cacheMaxFileBytes: number | null;
  log: boolean;
  /** vsock port of the CPU-profiling service (profile-service.ts); null: off. */
  profilePort: number | null;
  /** 2 MiB DMA pages to take (the image reserves at least as many hugepages). */
  dmaPages: number;
  /** Polling after each interrupt (kernel/guest/interrupts.ts); 0: interrupts only. */
  pollWindowMs: number;
}

/** With tx mode auto, DMA chunks below this are copied (VsockDriverOptions.autoZeroCopyMinBytes). */
export const APPLIANCE_AUTO_ZERO_COPY_MIN_BYTES = AUTO_ZERO_COPY_MIN_BYTES;

/**
 * DMA memory when --dma-pages is not given (2 MiB pages): the drivers' rings and buffer
 * pools take about 12 MiB (vsock rx and tx 4 MiB each, virtio-fs chunks 4 MiB); the file
 * cache and response bodies get what is left (see fileCacheBudget).
 */
export const DEFAULT_DMA_PAGES = 24;

/** DMA bytes kept free for response bodies and bulk transfers when the file cache is sized. */
export const DMA_RESERVE_BYTES = 2 * 1024 * 1024;

/**
 * The file cache's total: at most the webserver's default (16 MiB), at most what the DMA
 * arena has left after the drivers minus a reserve, at least 256 KiB (the site's pages).
 */
export function fileCacheBudget(freeDmaBytes: number): number {
  return Math.max(256 * 1024, Math.min(16 * 1024 * 1024, freeDmaBytes - DMA_RESERVE_BYTES));
}

export { DEFAULT_POLL_WINDOW_MS } from './guest-defaults.js';

function parse(argv: readonly string[]): EntryArgs {
  const a: EntryArgs = { drivers: 'ours', txMode: 'auto', ring: 'auto', port: 80, pingPongPort: 5000, tag: 'site', cache: true, cacheMaxFileBytes: null, log: false, profilePort: null, pollWindowMs: DEFAULT_POLL_WINDOW_MS, dmaPages: DEFAULT_DMA_PAGES };
  for (const arg of argv) {
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const v = eq < 0 ? '' : arg.slice(eq + 1);
    switch (flag) {
      case '--drivers':
        if (v !== 'ours' && v !== 'kernel') throw new Error(`--drivers: expected ours or kernel, got ${JSON.stringify(v)}`);
        a.drivers = v;
        break;
      case '--tx-mode':
        if (!(TX_MODES as readonly string[]).includes(v)) throw new Error(`--tx-mode: expected one of ${TX_MODES.join(', ')}, got ${JSON.stringify(v)}`);
        a.txMode = v as TxMode;
        break;
      case '--ring':
        a.ring = parseRingChoice(v, '--ring');
        break;
      case '--port':
      case '--pingpong-port':
      case '--profile-port': {
        if (!/^\d{1,10}$/.test(v) || Number(v) > 0xfffffffe) throw new Error(`${flag}: expected a vsock port, got ${JSON.stringify(v)}`);
        if (flag === '--port') a.port = Number(v);
        else if (flag === '--pingpong-port') a.pingPongPort = Number(v);
        else a.profilePort = Number(v);
        break;
      }
      case '--tag':
        if (!/^[A-Za-z0-9_.-]+$/.test(v)) throw new Error(`--tag: bad tag ${JSON.stringify(v)}`);
        a.tag = v;
        break;
      case '--no-cache':
        a.cache = false;
        break;
      case '--cache-max-file':
        if (!/^\d{1,9}$/.test(v)) throw new Error(`--cache-max-file: expected bytes, got ${JSON.stringify(v)}`);
        a.cacheMaxFileBytes = Number(v);
        break;
      case '--log':
        a.log = true;
        break;
      case '--dma-pages':
        if (!/^\d{1,4}$/.test(v) || Number(v) < 1 || Number(v) > 2047) throw new Error(`--dma-pages: expected 1..2047, got ${JSON.stringify(v)}`);
        a.dmaPages = Number(v);
        break;
      case '--poll-window-ms':
        if (!/^\d{1,5}$/.test(v) || Number(v) > 10_000) throw new Error(`--poll-window-ms: expected 0..10000, got ${JSON.stringify(v)}`);
        a.pollWindowMs = Number(v);
        break;
      default:
        throw new Error(`unknown flag ${JSON.stringify(flag)}`);
    }
  }
  return a;
}

/** The program: flags from process.argv.slice(2), then boot(). */
function main(): void {
  let args: EntryArgs;
  try {
    args = parse(process.argv.slice(2));
  } catch (e) {
    process.stdout.write(`appliance: ${(e as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  runAppliance(args);
}

function runAppliance(args: EntryArgs): void {
  boot(
    'appliance',
    async (ctx) => {
      const log = args.log ? (line: string) => ctx.log(line) : undefined;
      const closers: Array<() => Promise<void> | void> = [];
      if (args.drivers === 'ours') {
        const devOpts = { pollWindowMs: args.pollWindowMs };
        // Both at once: the vsock device is set up while FUSE_INIT travels to virtiofsd.
        const [fs, vsock] = await Promise.all([
          VirtioFsDriver.start(ctx.openVirtioDevice(VIRTIO_ID_FS, devOpts)),
          VsockDriver.start(ctx.openVirtioDevice(VIRTIO_ID_VSOCK, devOpts), { txMode: args.txMode, ring: args.ring, autoZeroCopyMinBytes: APPLIANCE_AUTO_ZERO_COPY_MIN_BYTES }),
        ]);
        ctx.stage('devices-ready');
        // Cached bodies live in DMA memory (sent by descriptor): the cache gets what the drivers left.
        const cacheTotal = fileCacheBudget(ctx.dma.arena.freeBytes);
        const cache = !args.cache ? (false as const) : { maxTotalBytes: cacheTotal, ...(args.cacheMaxFileBytes !== null ? { maxFileBytes: args.cacheMaxFileBytes } : {}) };
        if (args.log) ctx.log(`file cache: ${cache === false ? 'off' : `${(cacheTotal / 1048576).toFixed(1)} MiB`} (${(ctx.dma.arena.freeBytes / 1048576).toFixed(1)} MiB of DMA memory free)`);
        const listen = vsockListen(vsock);
        const files = new VirtioFsSiteFiles(fs, { root: '/' });
        // The webserver on raw connections (no node:stream per connection: under TCG the
        // Duplex machinery cost more than the driver and the HTTP parsing together).
        const web = await runWebserver({
          listenRaw: vsockListenRaw(vsock),
          files,
          port: args.port,
          cache,
          bufferAllocator: vsockBufferAllocator(vsock),
          log,
        });
        const pp = await runPingPong({ listen, port: args.pingPongPort });
        await runBulkServices({ listen, sinkPort: BULK_SINK_PORT, sourcePort: BULK_SOURCE_PORT, alloc: (n) => vsock.allocBuffer(n) });
        if (args.profilePort !== null) await runProfileService(listen, args.profilePort, (l) => ctx.log(l));
        closers.push(
          () => web.close(),
          () => files.close(),
          () => pp.close(),
          () => vsock.close(),
          () => fs.close(),
          () => ctx.log(`vsock ${JSON.stringify(vsock.stats)}; fs ${JSON.stringify(fs.stats)}; open handles ${JSON.stringify(files.openHandleStats)}`),
        );
        ctx.stage('listening');
        ctx.log(`${READY_MARKER} drivers=ours tx-mode=${args.txMode} ring=${vsock.ringLayout} cid=${vsock.localCid} web=${web.port} pingpong=${pp.port}`);
      } else {
        mkdirSync('/mnt', { recursive: true });
        const { execFileSync } = await import('node:child_process');
        execFileSync('mount', ['-t', 'virtiofs', args.tag, '/mnt'], { stdio: 'inherit' });
        ctx.stage('devices-ready');
        const cache = !args.cache ? (false as const) : args.cacheMaxFileBytes !== null ? { maxFileBytes: args.cacheMaxFileBytes } : undefined;
        const listen = (port: number, onSocket: (s: Duplex) => void) => kernelVsockListen(port, onSocket);
        const web = await runWebserver({ listen, files: new NodeSiteFiles('/mnt'), port: args.port, cache, log });
        const pp = await runPingPong({ listen, port: args.pingPongPort });
        await runBulkServices({ listen, sinkPort: BULK_SINK_PORT, sourcePort: BULK_SOURCE_PORT });
        if (args.profilePort !== null) await runProfileService(listen, args.profilePort, (l) => ctx.log(l));
        closers.push(
          () => web.close(),
          () => pp.close(),
        );
        ctx.stage('listening');
        ctx.log(`${READY_MARKER} drivers=kernel cid=3 web=${web.port} pingpong=${pp.port}`);
      }
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
      });
      for (const c of closers) await c();
      return 0;
    },
    // A server: node's code is locked in RAM after the first requests (kernel/guest/boot.ts).
    { dmaPages: args.drivers === 'kernel' ? 1 : args.dmaPages, lockCode: 'after-listening' },
  );
}

startProgram(main);
