// A stock Linux guest's own virtio-vsock driver on packed rings (virtio 1.2, 2.8) against
// our vhost-user-vsock daemon: QEMU 7.2's `vhost-user-vsock-pci,packed=on`, one boot for
// the whole file.
//   - the guest's driver and our device negotiated VIRTIO_F_RING_PACKED, and the
//     daemon's rings run packed (Linux also sends its two-buffer tx packets through
//     indirect tables there: our packed indirect path);
//   - 64 MiB host -> guest and 64 MiB guest -> host, SHA-256 equal on both ends;
//   - 50 connections at once, each echoed and checked;
//   - VM stop / cont (QMP): QEMU stops the rings (GET_VRING_BASE) and starts them again
//     with the base it was given (SET_VRING_BASE: both positions and both wrap counters,
//     vhost-user.rst's packed encoding); our device resumes exactly where the guest's
//     driver stands, several times over, and data flows after each;
//   - no guest misbehaviour counted, no chain refused;
//   - beside it, QEMU's vhost-user-fs-pci with packed=on and Debian's virtiofsd 7.2: the
//     guest gets split rings there (virtiofsd, on libvhost-user, does not offer the
//     packed layout, and QEMU 7.2 masks what the back end lacks for vhost-user-fs).
import test from 'ava';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startLinuxGuest, type LinuxGuest } from '../appliance/qemu/start.js';
import { VIRTIOFSD_PATH, spawnVirtiofsd, type VirtiofsdProcess } from '../appliance/qemu/virtiofsd.js';
import { decodePackedBase, encodePackedBase, FRESH_PACKED_STATE } from '../kernel/virtqueue/packed-layout.js';
import {
  GUEST_CID,
  deterministicBytes,
  deterministicSha256,
  echoConnections,
  pause,
  receiveFromGuest,
  sendToGuest,
  sha256Hex,
  startTestDaemon,
  waitGuestListening,
  withGuestEcho,
  type DaemonFixture,
} from './support/linux-vsock-guest.js';
import { type QmpClient, connectQmp } from '../appliance/qemu/qmp.js';

const SAFETY_TIMEOUT_MS = 25 * 60 * 1000; // kills a stuck QEMU; not an assertion
const BIG = 64 * 1024 * 1024;
const SEED = 'vhost-vsock-linux packed 64 MiB';

let fx: DaemonFixture | null = null;
let guest: Promise<LinuxGuest> | null = null;
let qmp: QmpClient | null = null;
let virtiofsd: VirtiofsdProcess | null = null;
const FS_FILE = deterministicBytes('virtiofs packed=on', 300 * 1024);
const withFs = existsSync(VIRTIOFSD_PATH);

test.before(async () => {
  fx = await startTestDaemon('vhost-vsock-linux-packed-');
  if (withFs) {
    const share = join(fx.dir, 'share');
    mkdirSync(share);
    writeFileSync(join(share, 'file.bin'), FS_FILE);
    virtiofsd = spawnVirtiofsd({ socketPath: join(fx.dir, 'fs.sock'), source: share });
    await virtiofsd.ready;
  }
});

test.after.always(async (t) => {
  qmp?.close();
  const g = await guest?.catch(() => null);
  if (g?.qemu.running) await g.qemu.stop();
  if (virtiofsd?.child.pid !== undefined && virtiofsd.child.exitCode === null) process.kill(virtiofsd.child.pid, 'SIGKILL');
  if (fx) t.log(`daemon log (last 40 lines):\n${await fx.dispose()}`);
});

/** QEMU's vhost-user-vsock-pci with packed=on (the launcher's own option has no packed: the device is given here), and a QMP socket. */
function bootGuest(): Promise<LinuxGuest> {
  const qmpPath = join(fx!.dir, 'qmp.sock');
  guest ??= startLinuxGuest({
    launch: {
      timeoutMs: SAFETY_TIMEOUT_MS,
      extraArgs: [
        ...['-chardev', `socket,id=vsock0,path=${fx!.socket}`, '-device', 'vhost-user-vsock-pci,chardev=vsock0,packed=on'],
        ...(withFs ? ['-chardev', `socket,id=fs0,path=${join(fx!.dir, 'fs.sock')}`, '-device', 'vhost-user-fs-pci,chardev=fs0,tag=hostshare,packed=on'] : []),
        ...['-qmp', `unix:${qmpPath},server=on,wait=off`],
      ],
    },
  }).then(async (g) => {
    qmp = await connectQmp(qmpPath);
    return g;
  });
  return guest;
}


/** The vring bases the daemon started its rings with, from its log ("ring N running (packed, size S, base B"). */
function ringStarts(): Array<{ ring: number; layout: string; size: number; base: number }> {
  return fx!.logs.flatMap((l) => {
    const m = /ring (\d+) running \((split|packed), size (\d+), base (\d+)/.exec(l);
    return m ? [{ ring: Number(m[1]), layout: m[2]!, size: Number(m[3]), base: Number(m[4]) }] : [];
  });
}

test.serial("the guest's own driver and our device negotiated the packed ring layout", async (t) => {
  const g = await bootGuest();
  // The device's feature bits as the guest's kernel accepted them: a string of 0/1, bit 0 first.
  const r = await g.shell.run('for d in /sys/bus/virtio/devices/*; do [ "$(cat $d/device)" = 0x0013 ] && cat $d/features; done; true', { timeoutMs: 60_000 });
  t.is(r.status, 0, r.output);
  const bits = r.output.trim();
  t.is(bits.length, 64, bits);
  t.is(bits[34], '1', 'VIRTIO_F_RING_PACKED (34) negotiated');
  t.is(bits[32], '1', 'VIRTIO_F_VERSION_1');
  t.is(bits[28], '1', 'VIRTIO_F_INDIRECT_DESC: Linux puts its two-buffer tx packets in indirect tables');
  t.is(bits[29], '1', 'VIRTIO_F_EVENT_IDX');
  await fx!.waitLog(/ring 1 running \(packed/);
  const starts = ringStarts();
  t.deepEqual(
    starts.map((s) => [s.ring, s.layout, s.base]),
    [
      [0, 'packed', encodePackedBase(FRESH_PACKED_STATE)],
      [1, 'packed', encodePackedBase(FRESH_PACKED_STATE)],
    ],
    'both rings (QEMU keeps the event queue) start packed from the fresh base: positions 0, wrap counters 1',
  );
});

test.serial('64 MiB host -> guest through the hybrid socket, SHA-256 equal (the guest keeps a copy)', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7201;
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  const before = dev.stats.rxBytes;
  const { sent, guest: r, echoedBytes } = await sendToGuest(g.shell, fx!.uds, port, SEED, BIG, 25 * 60_000);
  t.is(r.status, 0, r.output);
  t.is(r.output.split(/\s+/)[0], sent.sha256);
  t.is(sent.sha256, deterministicSha256(SEED, BIG));
  t.is(echoedBytes, 0);
  t.is(dev.stats.rxBytes - before, BIG, 'every byte went to the guest exactly once');
});

test.serial('64 MiB guest -> host through <uds>_P, SHA-256 equal', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7202;
  const { got: c, guest: r } = await receiveFromGuest(g.shell, (p, on) => fx!.hostListen(p, on), port, 25 * 60_000);
  t.regex(r.output, /status=0/);
  t.is(c.how, 'end');
  t.is(c.bytes, BIG);
  t.is(c.sha256, deterministicSha256(SEED, BIG));
  t.true(r.output.includes(c.sha256), 'the guest hashed the same bytes');
});

test.serial('50 connections at once through the hybrid socket, each echoed and checked', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7210;
  t.deepEqual(await withGuestEcho(g.shell, fx!.uds, port, () => echoConnections(fx!.uds, port, 50, 'packed conn')), []);
});

test.serial('VM stop and cont: the rings come back at the base QEMU kept (positions and wrap counters), data flows after each', async (t) => {
  t.timeout(12 * 60_000);
  const g = await bootGuest();
  const port = 7220;
  await withGuestEcho(g.shell, fx!.uds, port, async () => {
    const bases: number[] = [];
    for (let round = 0; round < 3; round++) {
      // Traffic moves both rings on (and around): a different base each round.
      t.deepEqual(await echoConnections(fx!.uds, port, 10 + round * 7, `before stop ${round}`), [], `round ${round}, before the stop`);
      const startsBefore = ringStarts().length;
      await qmp!.execute('stop');
      await qmp!.execute('cont');
      // Both rings started again (SET_VRING_BASE from QEMU, then the kick fd).
      while (ringStarts().length < startsBefore + 2) await pause(100);
      const after = ringStarts().slice(-2);
      t.deepEqual(after.map((s) => s.layout), ['packed', 'packed']);
      for (const s of after) {
        const st = decodePackedBase(s.base, s.size);
        t.log(`round ${round}: ring ${s.ring} restarted at avail ${st.availPos}/wrap ${st.availWrap}, used ${st.usedPos}/wrap ${st.usedWrap}`);
        bases.push(s.base);
      }
      await waitGuestListening(fx!.uds, port);
      t.deepEqual(await echoConnections(fx!.uds, port, 20, `after cont ${round}`), [], `round ${round}, after cont`);
    }
    t.true(
      bases.some((b) => b !== encodePackedBase(FRESH_PACKED_STATE)),
      'QEMU gave back bases that are not a fresh ring: the rings resumed mid-way',
    );
  });
});

(withFs ? test.serial : test.skip)('virtio-fs with packed=on and virtiofsd 7.2: the guest gets split rings (virtiofsd offers no packed layout), and the share reads back intact', async (t) => {
  const g = await bootGuest();
  const r = await g.shell.run('for d in /sys/bus/virtio/devices/*; do [ "$(cat $d/device)" = 0x001a ] && cat $d/features; done; true', { timeoutMs: 60_000 });
  t.is(r.status, 0, r.output);
  t.is(r.output.trim()[34], '0', 'VIRTIO_F_RING_PACKED not offered to the guest on the fs device');
  t.is(r.output.trim()[32], '1');
  const m = await g.shell.run('mkdir -p /mnt/host && mount -t virtiofs hostshare /mnt/host && sha256sum /mnt/host/file.bin', { timeoutMs: 120_000 });
  t.is(m.status, 0, m.output);
  t.is(m.output.split(/\s+/)[0], sha256Hex(FS_FILE));
});

test.serial('the device refused no chain and counted no guest misbehaviour over the whole file', async (t) => {
  const dev = fx!.daemon.devices.get(GUEST_CID)!;
  const dropped = Object.entries(dev.stats.dropped).filter(([k, v]) => v > 0 && !['rstUnknownIgnored', 'lateAfterClose', 'refused'].includes(k));
  t.deepEqual(dropped, []);
  t.false(fx!.logs.some((l) => /ERR_VIRTQ_|refused chain|front end dropped/.test(l)), fx!.logs.filter((l) => /ERR_VIRTQ_|front end dropped/.test(l)).join('\n'));
});
