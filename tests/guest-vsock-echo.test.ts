// Boots the QEMU guest once per machine with a vhost-user-vsock device served by our
// emulator daemon (the vhost-user-vsock command, a separate process) and runs
// appliance/guest/vsock-echo.ts in it: the TypeScript vsock driver, unchanged, on the
// machine's transport (virtio-mmio through uio_pdrv_genirq on microvm, modern PCI
// through uio_pci_generic on q35), hugepage DMA memory and uio interrupts. Host programs
// reach the guest's echo on vsock port 1234 the two ways the daemon offers: the hybrid
// Unix socket ("CONNECT 1234\n", Firecracker's convention) and a TCP forward.
import test from 'ava';
import { createHash } from 'node:crypto';
import { type Socket, connect } from 'node:net';
import { join } from 'node:path';
import type { QemuExit, QemuInstance } from '../appliance/qemu/launch.js';
import { DAEMON_BIN } from './support/daemon-process.js';
import { freeTcpPort } from './support/ports.js';
import { ADDON, GuestPerMachine, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest, resultLine, startDaemonProcess } from './support/qemu-guest.js';

const bundle = bundlePath('vsock-echo.js');
const GUEST_CID = 3;
const PORT = 1234;
const CONNECTIONS = 3;

interface Guest {
  qemu: QemuInstance;
  uds: string;
  tcpPort: number;
}

const guests = new GuestPerMachine<Guest>(async (machine, cleanup) => {
  const dir = cleanup.tempDir('guest-vsock-');
  const socket = join(dir, 'vhost.sock');
  const uds = join(dir, 'vsock.uds');
  const tcpPort = await freeTcpPort();
  await startDaemonProcess(cleanup, ['--vm', `guest-cid=${GUEST_CID},socket=${socket},uds-path=${uds}`, '--forward', `127.0.0.1:${tcpPort}=${GUEST_CID}:${PORT}`], socket);
  const qemu = await launchGuest(machine, { main: bundle, args: [`--port=${PORT}`, `--connections=${CONNECTIONS}`], vhostUserVsock: { socket }, timeoutMs: 5 * 60 * 1000 }, cleanup);
  await qemu.waitForLine(`listening on cid ${GUEST_CID} port ${PORT}`, 4 * 60 * 1000);
  return { qemu, uds, tcpPort };
});
test.after.always(() => guests.stopAll());

function connected(s: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
}

/** Collects everything until the peer ends the stream. */
function readAll(s: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

const guestTest = guestTestsReady('guest-vsock-echo', [bundle, ADDON, DAEMON_BIN]) ? test.serial : test.skip;

for (const machine of MACHINES) {
  guestTest(`${machine}: the guest binds the vsock device to uio and its vsock driver listens on port 1234`, async (t) => {
    const g = await guests.get(machine);
    t.regex(g.qemu.console(), deviceOpenedPattern(machine, 19));
  });

  guestTest(`${machine}: hybrid Unix socket: CONNECT 1234, then the echo`, async (t) => {
    const g = await guests.get(machine);
    const s = connect(g.uds);
    await connected(s);
    s.write(`CONNECT ${PORT}\n`);
    const all = readAll(s);
    // The guest echoes whatever follows the daemon's "OK <port>\n" line.
    await new Promise<void>((resolve) => {
      let seen = '';
      const onData = (d: Buffer): void => {
        seen += d.toString();
        if (seen.includes('\n')) {
          s.off('data', onData);
          resolve();
        }
      };
      s.on('data', onData);
    });
    s.end('hello over the hybrid socket\n');
    const text = (await all).toString();
    t.regex(text, /^OK \d+\n/);
    t.is(text.replace(/^OK \d+\n/, ''), 'hello over the hybrid socket\n');
  });

  guestTest(`${machine}: TCP forward: 64-byte ping-pong, then 1 MiB echoed intact`, async (t) => {
    const g = await guests.get(machine);
    const s = connect(g.tcpPort, '127.0.0.1');
    s.setNoDelay(true);
    await connected(s);
    const chunks: Buffer[] = [];
    let want = 0;
    let have = 0;
    let wake: (() => void) | null = null;
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      have += d.length;
      if (have >= want && wake) {
        const w = wake;
        wake = null;
        w();
      }
    });
    const ended = new Promise<void>((resolve, reject) => {
      s.once('end', resolve);
      s.once('error', reject);
    });
    const times: number[] = [];
    const msg = Buffer.alloc(64, 0x61);
    for (let i = 0; i < 50; i++) {
      want += msg.length;
      const t0 = process.hrtime.bigint();
      await new Promise<void>((resolve) => {
        wake = resolve;
        s.write(msg);
      });
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    times.sort((a, b) => a - b);
    const big = Buffer.alloc(1 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    const t0 = process.hrtime.bigint();
    s.end(big);
    await ended;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const all = Buffer.concat(chunks);
    t.is(all.length, 50 * 64 + big.length);
    t.is(all.subarray(0, 50 * 64).toString(), 'a'.repeat(50 * 64));
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    t.is(digest(all.subarray(50 * 64)), digest(big));
    t.log(`64-byte ping-pong over TCP -> daemon -> guest and back: p50 ${times[25]!.toFixed(0)} us, max ${times[49]!.toFixed(0)} us; 1 MiB echo ${ms.toFixed(0)} ms (TCG)`);
  });

  guestTest(`${machine}: after its last connection the guest program exits 0`, async (t) => {
    const g = await guests.get(machine);
    const s = connect(g.tcpPort, '127.0.0.1');
    await connected(s);
    const all = readAll(s);
    s.end('bye');
    t.is((await all).toString(), 'bye');
    const exit: QemuExit = await g.qemu.exited;
    t.is(exit.guestStatus, 0, g.qemu.console().slice(-3000));
    const result = resultLine<{ connections: number; echoedBytes: number; interrupts: number }>(g.qemu.console(), 'vsock-echo-result: ');
    if (result === null) return t.fail('no result line');
    t.is(result.connections, CONNECTIONS);
    t.is(result.echoedBytes, 'hello over the hybrid socket\n'.length + 50 * 64 + (1 << 20) + 3);
    t.true(result.interrupts > 0);
    t.notRegex(g.qemu.console(), /PANIC/);
    // boot() locked node's code at the start (BootOptions.lockCode's default).
    t.regex(g.qemu.console(), /vsock-echo: code locked in RAM: \d+ read-only file mappings, [\d.]+ MiB/);
  });
}
