// Level 2, the vsock driver in the guest: throughput host <-> guest at 64 KiB writes
// per transmit mode, and ping-pong p50/p99 at 8192/16384 per mode, through the
// daemon's hybrid Unix socket; in the same run the same guest program on the Linux
// kernel's own vsock driver (AF_VSOCK through the addon) on the same daemon code, as
// ratios.
//   npm run bench -- guest [--mib N] [--iterations N] [--modes auto,two-copy,...] [--no-kernel]
import type { Socket } from 'node:net';
import { parseClientArgs } from '../appliance/pingpong/client-args.js';
import { runClient } from '../appliance/pingpong/client.js';
import { connectHybridVsock } from '../appliance/pingpong/hybrid-connect.js';
import { type RunningAppliance, startAppliance } from '../appliance/run/appliance.js';
import { printTable, writeResults } from './report.js';
import { BenchUsageError } from './usage.js';

type TxMode = 'auto' | 'two-copy' | 'single-copy' | 'zero-copy';
const SINK_PORT = 6000;
const SOURCE_PORT = 6001;
const CHUNK = 64 * 1024;

interface GuestRow {
  guest: string;
  hostToGuestMBps: number;
  guestToHostMBps: number;
  pingPong: Array<{ sizeBytes: number; p50Us: number; p99Us: number }>;
}

/** MB/s writing `bytes` in 64 KiB writes to a sink that answers the byte count and ends. */
export async function hostToGuest(uds: string, bytes: number, port = SINK_PORT): Promise<number> {
  const s = await connectHybridVsock(uds, port);
  try {
    const buf = Buffer.alloc(CHUNK, 0x5a);
    const t0 = process.hrtime.bigint();
    let reply = '';
    const done = new Promise<void>((resolve, reject) => {
      s.on('data', (d: Buffer) => (reply += d.toString()));
      s.once('end', resolve);
      s.once('error', reject);
    });
    for (let sent = 0; sent < bytes; sent += CHUNK) {
      if (!s.write(buf)) await new Promise((r) => s.once('drain', r));
    }
    s.end();
    await done;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (Number(reply.trim()) !== bytes) throw new Error(`sink counted ${reply.trim()} bytes, sent ${bytes}`);
    return bytes / secs / 1e6;
  } finally {
    s.destroy();
  }
}

/** MB/s reading `bytes` from a source asked with "<bytes> <chunk>\n". */
export async function guestToHost(uds: string, bytes: number, port = SOURCE_PORT): Promise<number> {
  const s: Socket = await connectHybridVsock(uds, port);
  try {
    let got = 0;
    const t0 = process.hrtime.bigint();
    const done = new Promise<void>((resolve, reject) => {
      s.on('data', (d: Buffer) => (got += d.length));
      s.once('end', resolve);
      s.once('error', reject);
    });
    s.write(`${bytes} ${CHUNK}\n`);
    await done;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (got !== bytes) throw new Error(`source sent ${got} bytes, asked ${bytes}`);
    return bytes / secs / 1e6;
  } finally {
    s.destroy();
  }
}

async function measure(app: RunningAppliance, label: string, bytes: number, iterations: number): Promise<GuestRow> {
  await hostToGuest(app.hybridSocket, CHUNK * 16); // warm-up
  await guestToHost(app.hybridSocket, CHUNK * 16);
  const h2g = await hostToGuest(app.hybridSocket, bytes);
  const g2h = await guestToHost(app.hybridSocket, bytes);
  const text = await runClient(parseClientArgs(['--uds', `${app.hybridSocket}:5000`, '--sizes', '8192,16384', '--iterations', String(iterations), '--warmup', '10', '--json']));
  const pp = (JSON.parse(text) as { results: Array<{ sizeBytes: number; p50Us: number; p99Us: number }> }).results.map((r) => ({ sizeBytes: r.sizeBytes, p50Us: r.p50Us, p99Us: r.p99Us }));
  return { guest: label, hostToGuestMBps: h2g, guestToHostMBps: g2h, pingPong: pp };
}

export const usage = 'npm run bench -- guest [--mib N] [--iterations N] [--modes auto,two-copy,single-copy,zero-copy] [--no-kernel]';

export default async function guest(argv: string[]): Promise<void> {
  let mib = 16;
  let iterations = 300;
  let modes: TxMode[] = ['auto', 'two-copy', 'single-copy', 'zero-copy'];
  let kernel = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => argv[++i] ?? '';
    if (a === '--mib') mib = Number(v());
    else if (a === '--iterations') iterations = Number(v());
    else if (a === '--modes') modes = v().split(',') as TxMode[];
    else if (a === '--no-kernel') kernel = false;
    else throw new BenchUsageError(`unknown flag ${a} (flags: --mib N, --iterations N, --modes LIST, --no-kernel)`);
  }
  if (!(mib > 0) || !(iterations > 0)) {
    console.error('bench guest: --mib and --iterations take positive numbers');
    process.exit(2);
  }
  const bytes = Math.round(mib * 1024 * 1024 / CHUNK) * CHUNK;
  const rows: GuestRow[] = [];
  const run = async (drivers: 'ours' | 'kernel', mode: TxMode | undefined): Promise<void> => {
    const label = drivers === 'kernel' ? 'linux driver' : `ours ${mode}`;
    const app = await startAppliance({ port: 0, pingPongPort: 0, drivers, txMode: mode, progress: (l) => console.log(`  [${label}] ${l}`) });
    try {
      rows.push(await measure(app, label, bytes, iterations));
    } finally {
      await app.stop();
    }
  };
  for (const m of modes) await run('ours', m);
  if (kernel) await run('kernel', undefined);

  const k = rows.find((r) => r.guest === 'linux driver');
  const ratio = (a: number, b: number | undefined): string => (b === undefined ? '' : `${(a / b).toFixed(2)}x`);
  printTable(`throughput through the hybrid socket, ${mib} MiB in 64 KiB writes (QEMU TCG, loaded 2-core machine)`, rows.map((r) => ({
    guest: r.guest,
    'host->guest MB/s': Math.round(r.hostToGuestMBps * 10) / 10,
    'vs linux': r === k ? '' : ratio(r.hostToGuestMBps, k?.hostToGuestMBps),
    'guest->host MB/s': Math.round(r.guestToHostMBps * 10) / 10,
    'vs linux ': r === k ? '' : ratio(r.guestToHostMBps, k?.guestToHostMBps),
  })));
  printTable(`ping-pong through the hybrid socket, ${iterations} round trips per size`, rows.flatMap((r) => r.pingPong.map((p) => {
    const kp = k?.pingPong.find((x) => x.sizeBytes === p.sizeBytes);
    return { guest: r.guest, bytes: p.sizeBytes, 'p50 us': Math.round(p.p50Us), 'p99 us': Math.round(p.p99Us), 'p50 vs linux': r === k ? '' : ratio(p.p50Us, kp?.p50Us), 'p99 vs linux': r === k ? '' : ratio(p.p99Us, kp?.p99Us) };
  })));
  const path = writeResults('guest', { command: `npm run bench -- guest ${argv.join(' ')}`.trim(), bytes, chunkBytes: CHUNK, iterations, rows });
  console.log(`\nresults: ${path}`);
}
