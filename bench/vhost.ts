// Level 2, the device side alone: our vhost-user-vsock daemon (in this process) serving
// a stock-Linux guest (the kernel's own virtio-vsock driver, socat services), measured
// through the daemon's hybrid Unix socket: throughput host -> guest and guest -> host
// at 64 KiB writes, and ping-pong p50/p99 at 8192 and 16384 bytes (socat echo).
//   npm run bench -- vhost [--mib N] [--iterations N]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseClientArgs } from '../appliance/pingpong/client-args.js';
import { runClient } from '../appliance/pingpong/client.js';
import { connectHybridVsock } from '../appliance/pingpong/hybrid-connect.js';
import { type LinuxGuest, startLinuxGuest } from '../appliance/qemu/start.js';
import { startDaemon } from '../drivers/virtio-vsock/daemon/daemon.js';
import { guestToHost, hostToGuest } from './guest.js';
import { printTable, writeResults } from './report.js';

const CID = 3;
const ECHO_PORT = 5000;
const SINK_PORT = 6000;
const SOURCE_PORT = 6001;

async function waitListening(uds: string, port: number): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      const s = await connectHybridVsock(uds, port, 5000);
      s.destroy();
      return;
    } catch (e) {
      if (i > 100) throw new Error(`guest port ${port} does not answer: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

export default async function vhost(argv: string[]): Promise<void> {
  let mib = 16;
  let iterations = 300;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => argv[++i] ?? '';
    if (a === '--mib') mib = Number(v());
    else if (a === '--iterations') iterations = Number(v());
    else {
      console.error(`bench vhost: unknown flag ${a} (flags: --mib N, --iterations N)`);
      process.exit(2);
    }
  }
  if (!(mib > 0) || !(iterations > 0)) {
    console.error('bench vhost: --mib and --iterations take positive numbers');
    process.exit(2);
  }
  const bytes = Math.round((mib * 1024 * 1024) / 65536) * 65536;
  const dir = mkdtempSync(join(tmpdir(), 'tsv-vhost-'));
  const socket = join(dir, 'vsock.sock');
  const uds = join(dir, 'vsock.uds');
  const daemon = await startDaemon({ vms: [{ guestCid: CID, socketPath: socket, udsPath: uds }], forwards: [] }, { log: () => {} });
  let guest: LinuxGuest | null = null;
  try {
    console.log('booting the stock-Linux guest…');
    guest = await startLinuxGuest({ launch: { vhostUserVsock: { socket } } });
    console.log(`  shell ready after ${(guest.bootMs / 1000).toFixed(1)} s`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${ECHO_PORT},fork,reuseaddr EXEC:cat`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${SINK_PORT},fork,reuseaddr SYSTEM:'wc -c'`);
    await guest.shell.runBackground(`socat -b 65536 VSOCK-LISTEN:${SOURCE_PORT},fork,reuseaddr SYSTEM:'head -c ${bytes} /dev/zero'`);
    for (const p of [ECHO_PORT, SINK_PORT]) await waitListening(uds, p);
    await hostToGuest(uds, 1024 * 1024, SINK_PORT); // warm-up
    const h2g = await hostToGuest(uds, bytes, SINK_PORT);
    const g2h = await guestToHost(uds, bytes, SOURCE_PORT);
    const text = await runClient(parseClientArgs(['--uds', `${uds}:${ECHO_PORT}`, '--sizes', '8192,16384', '--iterations', String(iterations), '--warmup', '10', '--json']));
    const pp = (JSON.parse(text) as { results: Array<{ sizeBytes: number; p50Us: number; p99Us: number; meanUs: number }> }).results;
    printTable(`our vhost-user-vsock daemon, stock-Linux guest (socat), hybrid socket, ${mib} MiB at 64 KiB writes (QEMU TCG, loaded 2-core machine)`, [
      { direction: 'host -> guest', 'MB/s': Math.round(h2g * 10) / 10 },
      { direction: 'guest -> host', 'MB/s': Math.round(g2h * 10) / 10 },
    ]);
    printTable(`ping-pong (socat EXEC:cat echo), ${iterations} round trips`, pp.map((r) => ({ bytes: r.sizeBytes, 'p50 us': Math.round(r.p50Us), 'p99 us': Math.round(r.p99Us), 'mean us': Math.round(r.meanUs) })));
    const path = writeResults('vhost', {
      command: `npm run bench -- vhost ${argv.join(' ')}`.trim(),
      bytes,
      iterations,
      hostToGuestMBps: h2g,
      guestToHostMBps: g2h,
      pingPong: pp.map((r) => ({ sizeBytes: r.sizeBytes, p50Us: r.p50Us, p99Us: r.p99Us, meanUs: r.meanUs })),
    });
    console.log(`\nresults: ${path}`);
  } finally {
    if (guest?.qemu.running) await guest.qemu.stop();
    await daemon.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
