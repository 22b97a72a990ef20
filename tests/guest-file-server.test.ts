// Boots the QEMU guest once per machine with two vhost-user devices: vsock (our emulator,
// in this test process) and virtio-fs (Debian's C virtiofsd). appliance/guest/file-server-probe.ts
// drives both from TypeScript on the machine's transport (two virtio-mmio devices on
// uio_pdrv_genirq on microvm, two PCI functions on uio_pci_generic on q35) with one DMA
// arena and two uio interrupt sources, and serves files read through virtio-fs over
// vsock without copying them in the guest. The host asks for files and checks the bytes.
import test from 'ava';
import { VIRTIOFSD_PATH } from '../appliance/qemu/virtiofsd.js';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { QemuInstance } from '../appliance/qemu/launch.js';
import type { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { ADDON, GuestPerMachine, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest, resultLine, startVirtiofsd, startVsockBackend } from './support/qemu-guest.js';

const bundle = bundlePath('file-server-probe.js');
const CONNECTIONS = 3;

interface Guest {
  qemu: QemuInstance;
  device: VsockDevice;
  files: Record<string, Buffer>;
}

const guests = new GuestPerMachine<Guest>(async (machine, cleanup) => {
  const dir = cleanup.tempDir('guest-file-server-');
  const share = join(dir, 'share');
  mkdirSync(share);
  const files = { 'hello.txt': Buffer.from('hello through virtio-fs and vsock\n'), 'big.bin': randomBytes(3_000_000) };
  for (const [name, data] of Object.entries(files)) writeFileSync(join(share, name), data);
  const fsSocket = join(dir, 'fs.sock');
  await startVirtiofsd(cleanup, { socketPath: fsSocket, source: share });
  const vsockSocket = join(dir, 'vsock.sock');
  const { device } = await startVsockBackend(cleanup, vsockSocket);
  const qemu = await launchGuest(
    machine,
    { main: bundle, args: [`--connections=${CONNECTIONS}`], vhostUserVsock: { socket: vsockSocket }, virtiofs: { socket: fsSocket, tag: 'site' }, timeoutMs: 5 * 60 * 1000 },
    cleanup,
  );
  return { qemu, device, files };
});
test.after.always(() => guests.stopAll());

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
const guestTest = guestTestsReady('guest-file-server', [VIRTIOFSD_PATH, bundle, ADDON]) ? test.serial : test.skip;

for (const machine of MACHINES) {
  guestTest(`${machine}: a small file comes back over vsock`, async (t) => {
    const g = await guests.get(machine);
    const { size, body } = await get(g, 'hello.txt');
    t.is(size, g.files['hello.txt']!.length);
    t.is(body.toString(), g.files['hello.txt']!.toString());
  });

  guestTest(`${machine}: a 3 MB file comes back intact, sent from the DMA chunks virtio-fs filled`, async (t) => {
    const g = await guests.get(machine);
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

  guestTest(`${machine}: a missing file answers -1; after the last connection the guest exits 0`, async (t) => {
    const g = await guests.get(machine);
    const { size, body } = await get(g, 'missing.txt');
    t.is(size, -1);
    t.is(body.length, 0);
    const exit = await g.qemu.exited;
    const text = g.qemu.console();
    t.is(exit.guestStatus, 0, text.slice(-3000));
    t.regex(text, deviceOpenedPattern(machine, 19));
    t.regex(text, deviceOpenedPattern(machine, 26));
    const r = resultLine<{ served: number; bytesSent: number; vsockInterrupts: number; fsInterrupts: number; fsStats: Record<string, number>; vsockStats: Record<string, unknown> }>(text, 'file-server-probe-result: ');
    if (r === null) return t.fail('no result line');
    t.is(r.served, CONNECTIONS);
    t.is(r.bytesSent, 3_000_000 + g.files['hello.txt']!.length);
    t.true(r.vsockInterrupts > 0 && r.fsInterrupts > 0);
    t.log(`interrupts: vsock ${r.vsockInterrupts}, virtio-fs ${r.fsInterrupts}; fs ${JSON.stringify(r.fsStats)}; vsock ${JSON.stringify(r.vsockStats)}`);
  });
}
