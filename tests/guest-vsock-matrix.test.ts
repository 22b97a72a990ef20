// Issue 5's guest matrix, one QEMU boot per machine: appliance/guest/vsock-matrix.ts runs
// our TypeScript vsock driver on the machine's transport (virtio-mmio on microvm, modern
// PCI on q35) with a vhost-user-vsock device served by our daemon (a separate process). One driver, three echo servers,
// each with its own transmit mode (socket option txMode): 1234 two-copy, 1235
// single-copy, 1236 zero-copy. From the host:
//   - 64 MiB each way through the hybrid Unix socket and through a TCP forward, per
//     mode (the two paths at once), SHA-256 of what came back equal to what was sent;
//   - the guest connects out to host CID 2 port P (the daemon's `<uds-path>_P`
//     listener, made before boot) and the bytes are checked on both sides;
//   - 50 connections at once (spread over the three modes and both paths), each
//     echoed intact;
//   - the control port's "exit" makes the guest program exit 0; the launcher returns it.
// No verdict depends on the clock; timeouts only guard against a hung guest.
import test from 'ava';
import { pattern } from '../appliance/guest/pattern.js';
import { freeTcpPort } from './support/ports.js';
import { DAEMON_BIN } from './support/daemon-process.js';
import { createHash } from 'node:crypto';
import { type Socket, createServer } from 'node:net';
import { join } from 'node:path';
import type { QemuInstance } from '../appliance/qemu/launch.js';
import { collect, deterministicChunks, deterministicSha256, hybridConnect, tcpConnect, writeChunks } from './support/linux-vsock-guest.js';
import { ADDON, GuestPerMachine, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest, resultLine, startDaemonProcess } from './support/qemu-guest.js';

const bundle = bundlePath('vsock-matrix.js');
const GUEST_CID = 3;
const MODES = [
  { port: 1234, mode: 'two-copy' },
  { port: 1235, mode: 'single-copy' },
  { port: 1236, mode: 'zero-copy' },
] as const;
const CONTROL_PORT = 1299;
const OUT_PORT = 5000;
const OUT_BYTES = 1 << 20;
const BIG = 64 * 1024 * 1024;
const MANY = 50;
const MANY_BYTES = 128 * 1024;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Guest {
  qemu: QemuInstance;
  uds: string;
  /** Host TCP port forwarded to each guest echo port. */
  tcp: Map<number, number>;
  /** What the host listener at `${uds}_${OUT_PORT}` received, once the guest ended. */
  outgoing: Promise<{ bytes: number; sha256: string; how: string }>;
}

const guests = new GuestPerMachine<Guest>(async (machine, cleanup) => {
  const dir = cleanup.tempDir('guest-vsock-matrix-');
  const socket = join(dir, 'vhost.sock');
  const uds = join(dir, 'vsock.uds');
  const tcp = new Map<number, number>();
  for (const m of MODES) tcp.set(m.port, await freeTcpPort());
  // The guest connects out at start: the host listener exists before the boot. It
  // echoes what it gets (allowHalfOpen: the guest ends first, then reads to our end).
  let outgoingDone!: (r: { bytes: number; sha256: string; how: string }) => void;
  const outgoing = new Promise<{ bytes: number; sha256: string; how: string }>((r) => (outgoingDone = r));
  const listener = createServer({ allowHalfOpen: true }, (s: Socket) => {
    const h = createHash('sha256');
    let bytes = 0;
    s.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
      if (!s.write(d)) s.pause();
    });
    s.on('drain', () => s.resume());
    s.on('end', () => {
      s.end();
      outgoingDone({ bytes, sha256: h.digest('hex'), how: 'end' });
    });
    s.on('error', (e) => outgoingDone({ bytes, sha256: h.digest('hex'), how: e.message }));
  });
  cleanup.add(() => listener.close());
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(`${uds}_${OUT_PORT}`, resolve);
  });
  const args = ['--vm', `guest-cid=${GUEST_CID},socket=${socket},uds-path=${uds}`];
  for (const m of MODES) args.push('--forward', `127.0.0.1:${tcp.get(m.port)}=${GUEST_CID}:${m.port}`);
  await startDaemonProcess(cleanup, args, socket);
  const qemu = await launchGuest(machine, { main: bundle, args: [`--connect-port=${OUT_PORT}`, `--connect-bytes=${OUT_BYTES}`], vhostUserVsock: { socket }, timeoutMs: 25 * 60 * 1000 }, cleanup);
  await qemu.waitForLine(`listening on cid ${GUEST_CID} ports 1234,1235,1236,${CONTROL_PORT}`, 5 * 60 * 1000);
  return { qemu, uds, tcp, outgoing };
});
test.after.always(() => guests.stopAll());

/** Sends `bytes` of the seeded stream on `s` and reads the echo to its end; both SHA-256. */
async function echoOver(s: Socket, seed: string, bytes: number): Promise<{ sent: string; back: string; backBytes: number; how: string }> {
  const back = collect(s, false);
  const sent = await writeChunks(s, deterministicChunks(seed, bytes));
  const b = await back;
  return { sent: sent.sha256, back: b.sha256, backBytes: b.bytes, how: b.how };
}

const guestTest = guestTestsReady('guest-vsock-matrix', [bundle, ADDON, DAEMON_BIN]) ? test.serial : test.skip;

for (const machine of MACHINES) {
  guestTest(`${machine}: the guest binds the vsock device to uio and listens on the three echo ports and the control port`, async (t) => {
    const g = await guests.get(machine);
    t.regex(g.qemu.console(), deviceOpenedPattern(machine, 19));
  });

  guestTest(`${machine}: guest -> host: the guest connects to CID 2 port ${OUT_PORT} (<uds>_${OUT_PORT}) and 1 MiB goes both ways intact`, async (t) => {
    const g = await guests.get(machine);
    const got = await g.outgoing;
    const line = await g.qemu.waitForLine('vsock-matrix: outgoing ', 5 * 60 * 1000);
    const guestSide = JSON.parse(line.slice(line.indexOf('vsock-matrix: outgoing ') + 'vsock-matrix: outgoing '.length)) as { ok: boolean; sent: number; received: number; sha256: string; error?: string };
    const expected = sha256(pattern(OUT_PORT, OUT_BYTES));
    t.is(got.how, 'end');
    t.is(got.bytes, OUT_BYTES);
    t.is(got.sha256, expected, 'what the host received is the guest pattern');
    t.is(guestSide.sha256, expected);
    t.true(guestSide.ok, `the guest got its bytes back unchanged: ${line}`);
    t.is(guestSide.received, OUT_BYTES);
  });

  for (const m of MODES) {
    guestTest(`${machine}: ${m.mode} (port ${m.port}): 64 MiB each way over the hybrid socket and over TCP at once, SHA-256 equal`, async (t) => {
      const g = await guests.get(machine);
      const t0 = process.hrtime.bigint();
      const [hy, tc] = await Promise.all([
        hybridConnect(g.uds, m.port).then((s) => echoOver(s, `matrix-hybrid-${m.mode}`, BIG)),
        tcpConnect(g.tcp.get(m.port)!).then((s) => echoOver(s, `matrix-tcp-${m.mode}`, BIG)),
      ]);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      for (const [name, r, seed] of [
        ['hybrid', hy, `matrix-hybrid-${m.mode}`],
        ['tcp', tc, `matrix-tcp-${m.mode}`],
      ] as const) {
        t.is(r.how, 'end', name);
        t.is(r.backBytes, BIG, name);
        t.is(r.sent, deterministicSha256(seed, BIG), name);
        t.is(r.back, r.sent, `${name}: echo SHA-256`);
      }
      t.log(`${m.mode}: 2 x 64 MiB echoed in ${(ms / 1000).toFixed(1)} s (${((4 * BIG) / 1048576 / (ms / 1000)).toFixed(1)} MiB/s both directions summed, TCG, loaded machine)`);
    });
  }

  guestTest(`${machine}: ${MANY} connections at once, spread over the three modes and both paths, each echoed intact`, async (t) => {
    const g = await guests.get(machine);
    const runs = Array.from({ length: MANY }, async (_, i) => {
      const m = MODES[i % MODES.length]!;
      const viaHybrid = i % 2 === 0;
      const s = viaHybrid ? await hybridConnect(g.uds, m.port) : await tcpConnect(g.tcp.get(m.port)!);
      const seed = `matrix-many-${i}`;
      const r = await echoOver(s, seed, MANY_BYTES + i * 97);
      return { i, r, want: MANY_BYTES + i * 97 };
    });
    const all = await Promise.all(runs);
    for (const { i, r, want } of all) {
      t.is(r.how, 'end', `connection ${i}`);
      t.is(r.backBytes, want, `connection ${i}`);
      t.is(r.back, r.sent, `connection ${i}: echo SHA-256`);
    }
  });

  guestTest(`${machine}: "exit" on the control port: the guest program exits 0 and reports each mode ran its own transmit path`, async (t) => {
    const g = await guests.get(machine);
    const s = await hybridConnect(g.uds, CONTROL_PORT);
    const reply = collect(s);
    s.end('exit\n');
    t.is((await reply).data?.toString(), 'bye\n');
    const exit = await g.qemu.exited;
    t.is(exit.guestStatus, 0, g.qemu.console().slice(-3000));
    const result = resultLine<{
      modes: Array<{ port: number; mode: string; connections: number; echoedBytes: number; errors: number }>;
      dmaOutstanding: number;
      maxDmaOutstanding: number;
      stats: Record<string, number>;
    }>(g.qemu.console(), 'vsock-matrix-result: ');
    if (result === null) return t.fail('no result line');
    t.log(`guest: ${JSON.stringify(result.modes)}; maxDmaOutstanding ${result.maxDmaOutstanding}; stats ${JSON.stringify(result.stats)}`);
    for (const m of result.modes) {
      t.is(m.errors, 0, `${m.mode}: no socket errors`);
      t.true(m.echoedBytes >= 2 * BIG, `${m.mode}: echoed both 64 MiB streams`);
    }
    t.is(result.dmaOutstanding, 0, 'every zero-copy buffer came back from the device');
    const echoed = (mode: string): number => result.modes.find((m) => m.mode === mode)!.echoedBytes;
    // Each server ran its own path: two-copy copies every byte twice, single-copy once,
    // zero-copy not at all (the outgoing 1 MiB and "bye\n" went by the driver's 'auto' path,
    // copied once since they are not DMA memory).
    t.true(result.stats.txPacketObjects! > 0, 'two-copy ran (packet objects)');
    t.is(result.stats.txCopiedBytes, 2 * echoed('two-copy') + echoed('single-copy') + OUT_BYTES + 'bye\n'.length, 'bytes copied on transmit');
    t.is(result.stats.txZeroCopyBytes, echoed('zero-copy'), 'zero-copy echo went out by descriptor, all of it');
    t.is(result.stats.txZeroCopyMisses, 0, 'zero-copy writes were all DMA buffers');
    t.is(result.stats.rxCreditOverruns, 0);
    t.notRegex(g.qemu.console(), /PANIC/);
  });
}
