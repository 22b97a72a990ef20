// Boots the QEMU guest once with a vhost-user-vsock device served by our own emulator
// (VsockDevice behind the vhost-user server, in this test process) and runs
// appliance/guest/vsock-echo.ts in it: the TypeScript vsock driver, unchanged, on the
// virtio modern PCI transport, hugepage DMA memory and uio interrupts. The host side
// connects to guest port 1234 through the emulator's host API and checks the echo.
import test from 'ava';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { type QemuExit, type QemuInstance, launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import { type VhostUserServer, startVhostUserServer } from '../kernel/vhost-user/server.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bundle = `${root}dist/bundles/vsock-echo.js`;
const addon = `${root}build/Release/tsvirtio.node`;
const GUEST_CID = 3;
const PORT = 1234;
const CONNECTIONS = 3;

interface Guest {
  qemu: QemuInstance;
  device: VsockDevice;
  server: VhostUserServer;
  dir: string;
}

let guest: Promise<Guest> | null = null;

function startGuest(): Promise<Guest> {
  guest ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'guest-vsock-'));
    const socketPath = join(dir, 'vsock.sock');
    const device = new VsockDevice({ guestCid: GUEST_CID });
    const server = await startVhostUserServer({ socketPath, model: device, log: () => {} });
    const image = await buildNodeGuest({
      main: bundle,
      files: [{ guest: '/app/tsvirtio.node', host: addon }],
      args: [`--port=${PORT}`, `--connections=${CONNECTIONS}`],
    });
    const qemu = launchQemu({
      kernel: image.kernel,
      initrd: image.initrd,
      append: image.append,
      vhostUserVsock: { socket: socketPath },
      timeoutMs: 5 * 60 * 1000, // safety net against a hung guest, not an assertion
    });
    return { qemu, device, server, dir };
  })();
  return guest;
}

test.after.always(async () => {
  if (guest === null) return;
  const g = await guest.catch(() => null);
  if (g === null) return;
  if (g.qemu.running) await g.qemu.stop();
  await g.server.close();
  rmSync(g.dir, { recursive: true, force: true });
});

/** Sends `data`, ends the stream, and collects everything echoed until the guest ends it. */
async function echo(s: VsockHostSocket, data: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((resolve, reject) => {
    s.once('end', resolve);
    s.once('error', reject);
  });
  s.end(data);
  await ended;
  return Buffer.concat(chunks);
}

async function connectWhenListening(): Promise<{ g: Guest; s: VsockHostSocket }> {
  const g = await startGuest();
  await g.qemu.waitForLine(`listening on cid ${GUEST_CID} port ${PORT}`, 4 * 60 * 1000);
  return { g, s: await g.device.host.connect(PORT) };
}

const ready = qemuAvailable() && existsSync(bundle) && existsSync(addon);
const guestTest = ready ? test.serial : test.skip;
if (!ready) console.warn('guest-vsock-echo: skipped (needs qemu-system-x86_64, `node build.mjs` output and the native addon)');

guestTest('the guest binds 1af4:1053 and its vsock driver listens on port 1234', async (t) => {
  const g = await startGuest();
  const line = await g.qemu.waitForLine(/listening on cid \d+ port \d+/, 4 * 60 * 1000);
  t.true(line.includes(`listening on cid ${GUEST_CID} port ${PORT}`), line);
  t.regex(g.qemu.console(), /1af4:1053 -> \/dev\/uio\d+, virtio device 19, interrupts: uio\d+ INTx/);
});

guestTest('a short message comes back', async (t) => {
  const { s } = await connectWhenListening();
  const got = await echo(s, Buffer.from('hello from the host\n'));
  t.is(got.toString(), 'hello from the host\n');
});

guestTest('ping-pong of small messages, then 1 MiB echoed intact', async (t) => {
  const { s } = await connectWhenListening();
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
  want += big.length;
  const ended = new Promise<void>((resolve, reject) => {
    s.once('end', resolve);
    s.once('error', reject);
  });
  const t0 = process.hrtime.bigint();
  s.end(big);
  await ended;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const all = Buffer.concat(chunks);
  t.is(all.length, 50 * 64 + big.length);
  t.is(all.subarray(0, 50 * 64).toString(), 'a'.repeat(50 * 64));
  const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  t.is(digest(all.subarray(50 * 64)), digest(big));
  t.log(`64-byte ping-pong host -> guest -> host: p50 ${times[25]!.toFixed(0)} us, max ${times[49]!.toFixed(0)} us; 1 MiB echo ${ms.toFixed(0)} ms (TCG)`);
});

guestTest('after its last connection the guest program exits 0', async (t) => {
  const { g, s } = await connectWhenListening();
  t.is((await echo(s, Buffer.from('bye'))).toString(), 'bye');
  const exit: QemuExit = await g.qemu.exited;
  t.is(exit.guestStatus, 0, g.qemu.console().slice(-3000));
  const line = g.qemu.console().split('\n').find((l) => l.startsWith('vsock-echo-result: '));
  t.truthy(line);
  const result = JSON.parse(line!.slice('vsock-echo-result: '.length)) as { connections: number; echoedBytes: number; interrupts: number };
  t.is(result.connections, CONNECTIONS);
  t.is(result.echoedBytes, 20 + 50 * 64 + (1 << 20) + 3);
  t.true(result.interrupts > 0);
  t.notRegex(g.qemu.console(), /PANIC/);
});
