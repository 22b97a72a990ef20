// Boots the QEMU guest once with two vhost-user devices: vsock (our emulator, in this
// test process) and virtio-fs (Debian's C virtiofsd). appliance/guest/file-server-probe.ts
// drives both from TypeScript on the PCI transport with one DMA arena and two uio
// interrupt sources, and serves files read through virtio-fs over vsock without
// copying them in the guest. The host asks for files and checks the bytes.
import test from 'ava';
import { VIRTIOFSD_PATH, spawnVirtiofsd } from '../appliance/qemu/virtiofsd.js';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { type QemuInstance, launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { type VhostUserServer, startVhostUserServer } from '../kernel/vhost-user/server.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bundle = `${root}dist/bundles/file-server-probe.js`;
const addon = `${root}build/Release/tsvirtio.node`;
const CONNECTIONS = 3;

interface Guest {
  qemu: QemuInstance;
  device: VsockDevice;
  server: VhostUserServer;
  virtiofsd: ChildProcess;
  dir: string;
  files: Record<string, Buffer>;
}

let guest: Promise<Guest> | null = null;
const started: Partial<Guest> = {};

function startGuest(): Promise<Guest> {
  guest ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'guest-file-server-'));
    started.dir = dir;
    const share = join(dir, 'share');
    mkdirSync(share);
    const files = { 'hello.txt': Buffer.from('hello through virtio-fs and vsock\n'), 'big.bin': randomBytes(3_000_000) };
    for (const [name, data] of Object.entries(files)) writeFileSync(join(share, name), data);
    const fsSocket = join(dir, 'fs.sock');
    const vfs = spawnVirtiofsd({ socketPath: fsSocket, source: share });
    started.virtiofsd = vfs.child;
    await vfs.ready;
    const vsockSocket = join(dir, 'vsock.sock');
    const device = new VsockDevice({ guestCid: 3 });
    const server = await startVhostUserServer({ socketPath: vsockSocket, model: device, log: () => {} });
    started.server = server;
    const image = await buildNodeGuest({ main: bundle, files: [{ guest: '/app/tsvirtio.node', host: addon }], args: [`--connections=${CONNECTIONS}`] });
    const qemu = launchQemu({
      kernel: image.kernel,
      initrd: image.initrd,
      append: image.append,
      vhostUserVsock: { socket: vsockSocket },
      virtiofs: { socket: fsSocket, tag: 'site' },
      timeoutMs: 5 * 60 * 1000, // safety net against a hung guest, not an assertion
    });
    started.qemu = qemu;
    return { qemu, device, server, virtiofsd: vfs.child, dir, files };
  })();
  return guest;
}

test.after.always(async () => {
  if (started.qemu?.running) await started.qemu.stop();
  await started.server?.close();
  const v = started.virtiofsd;
  if (v && v.exitCode === null && v.signalCode === null) {
    const gone = new Promise((resolve) => v.once('exit', resolve));
    v.kill('SIGTERM');
    await gone;
  }
  if (started.dir) rmSync(started.dir, { recursive: true, force: true });
});

/** Asks for a file; resolves the announced size and the bytes that followed. */
async function get(g: Guest, name: string): Promise<{ size: number; body: Buffer }> {
  await g.qemu.waitForLine('serving tag site on cid 3 port 1234', 4 * 60 * 1000);
  const s = await g.device.host.connect(1234);
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((resolve, reject) => {
    s.once('end', resolve);
    s.once('error', reject);
  });
  s.end(`GET ${name}\n`);
  await ended;
  const all = Buffer.concat(chunks);
  const nl = all.indexOf(10);
  return { size: Number(all.subarray(0, nl).toString()), body: all.subarray(nl + 1) };
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const ready = qemuAvailable() && existsSync(VIRTIOFSD_PATH) && existsSync(bundle) && existsSync(addon);
const guestTest = ready ? test.serial : test.skip;
if (!ready) console.warn('guest-file-server: skipped (needs qemu-system-x86_64, virtiofsd, `node build.mjs` output and the native addon)');

guestTest('a small file comes back over vsock', async (t) => {
  const g = await startGuest();
  const { size, body } = await get(g, 'hello.txt');
  t.is(size, g.files['hello.txt']!.length);
  t.is(body.toString(), g.files['hello.txt']!.toString());
});

guestTest('a 3 MB file comes back intact, sent from the DMA chunks virtio-fs filled', async (t) => {
  const g = await startGuest();
  const t0 = process.hrtime.bigint();
  const { size, body } = await get(g, 'big.bin');
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  t.is(size, 3_000_000);
  t.is(body.length, 3_000_000);
  const orig = g.files['big.bin']!;
  let firstBad = -1;
  for (let i = 0; i < orig.length && firstBad < 0; i++) if (body[i] !== orig[i]) firstBad = i;
  // A mismatch starting inside a DMA chunk, where the chunk crosses a 2 MiB hugepage
  // boundary, means a descriptor address was computed linearly across physically
  // discontiguous pages.
  t.is(firstBad, -1, `first wrong byte at file offset 0x${firstBad.toString(16)}`);
  t.is(sha256(body), sha256(orig));
  t.log(`3 MB virtio-fs -> vsock in ${ms.toFixed(0)} ms (TCG)`);
});

guestTest('a missing file answers -1; after the last connection the guest exits 0', async (t) => {
  const g = await startGuest();
  const { size, body } = await get(g, 'missing.txt');
  t.is(size, -1);
  t.is(body.length, 0);
  const exit = await g.qemu.exited;
  const text = g.qemu.console();
  t.is(exit.guestStatus, 0, text.slice(-3000));
  t.regex(text, /1af4:1053 -> \/dev\/uio\d+, virtio device 19/);
  t.regex(text, /1af4:105a -> \/dev\/uio\d+, virtio device 26/);
  const line = text.split('\n').find((l) => l.startsWith('file-server-probe-result: '));
  if (line === undefined) return t.fail('no result line');
  const r = JSON.parse(line.slice('file-server-probe-result: '.length)) as { served: number; bytesSent: number; vsockInterrupts: number; fsInterrupts: number; fsStats: Record<string, number>; vsockStats: Record<string, unknown> };
  t.is(r.served, CONNECTIONS);
  t.is(r.bytesSent, 3_000_000 + g.files['hello.txt']!.length);
  t.true(r.vsockInterrupts > 0 && r.fsInterrupts > 0);
  t.log(`interrupts: vsock ${r.vsockInterrupts}, virtio-fs ${r.fsInterrupts}; fs ${JSON.stringify(r.fsStats)}; vsock ${JSON.stringify(r.vsockStats)}`);
});
