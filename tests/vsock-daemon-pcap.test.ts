// The daemon's packet capture (--pcap, --pcap-snaplen, per-VM pcap=), decoded with
// tshark: every packet both ways as LINKTYPE_VSOCK (271) records whose ports, ops and
// payload bytes match what was sent; nothing lost when the process is killed; a capture
// file that cannot be created (missing folder, a folder) or written (full disk: a small
// tmpfs, and an injected EIO) is reported with its path and reason while every VM is
// served on. The VMs are driven by the raw test driver behind a fake vhost-user server
// (tests/support/daemon-raw-guest.ts).
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VSOCK_OP_CREDIT_REQUEST, VSOCK_OP_CREDIT_UPDATE, VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_OP_RW, VSOCK_OP_SHUTDOWN } from '../drivers/virtio-vsock/header.js';
import { AF_VSOCK_OP_CONNECT, AF_VSOCK_OP_CONTROL, AF_VSOCK_OP_DISCONNECT, AF_VSOCK_OP_PAYLOAD, LINKTYPE_VSOCK, nodeFileOps, type PcapFileOps } from '../drivers/virtio-vsock/daemon/pcap-capture.js';
import type { DaemonConfig } from '../drivers/virtio-vsock/daemon/config.js';
import { acceptOnGuest, hybridConnectLine, type RawGuestDaemon, readToEnd, startRawGuestDaemon } from './support/daemon-raw-guest.js';
import { ensureTshark, tsharkBytes, tsharkFields } from './support/tshark.js';
import { RawStream } from './support/vsock-raw-driver.js';

const CID = 3;
const FIELDS = ['frame.len', 'frame.cap_len', 'vsock.src_cid', 'vsock.src_port', 'vsock.dst_cid', 'vsock.dst_port', 'vsock.op', 'vsock.trans', 'vsock.virtio.op', 'vsock.virtio.len', 'vsock.virtio.flags', 'vsock.payload'] as const;
type Frame = Record<(typeof FIELDS)[number], string>;

function decode(file: string): Frame[] {
  const r = tsharkFields(file, FIELDS);
  if (r.status !== 0) throw new Error(`tshark failed (${r.status}) on ${file}: ${r.stderr}`);
  return r.rows.map((row) => Object.fromEntries(FIELDS.map((f, i) => [f, row[i] ?? ''])) as Frame);
}

/** Payload bytes of the RW frames from src port to dst port, in order. */
function streamBytes(frames: Frame[], srcPort: number, dstPort: number): Buffer {
  return Buffer.concat(frames.filter((f) => Number(f['vsock.virtio.op']) === VSOCK_OP_RW && Number(f['vsock.src_port']) === srcPort && Number(f['vsock.dst_port']) === dstPort).map((f) => tsharkBytes(f['vsock.payload'])));
}

function config(dir: string, extra: Partial<DaemonConfig> = {}): DaemonConfig {
  return { vms: [{ guestCid: CID, socketPath: join(dir, 'vhost.sock'), udsPath: join(dir, 'vm.vsock') }], forwards: [], ...extra };
}

/** Host program at <uds>_<port> that answers each connection with `reply` after reading it all. */
function hostListener(path: string, reply: string): Promise<{ server: Server; got: Promise<Buffer> }> {
  return new Promise((resolve) => {
    let gotResolve: (b: Buffer) => void = () => {};
    const got = new Promise<Buffer>((r) => (gotResolve = r));
    const server = createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      void readToEnd(s).then((b) => {
        gotResolve(b);
        s.end(reply);
      });
    });
    server.listen(path, () => resolve({ server, got }));
  });
}

/** Both ways through the hybrid socket plus a refused guest connect; returns what was sent. */
async function traffic(fx: RawGuestDaemon): Promise<{ hostPort: number; toGuest: Buffer; toHost: Buffer; g2hGuestPort: number; g2hSent: Buffer; g2hReply: string }> {
  const drv = fx.attach(CID);
  const uds = join(fx.dir, 'vm.vsock');
  // Host -> guest: CONNECT 5000, data both ways, half-close both ways.
  const accepted = acceptOnGuest(drv, 5000);
  const { line, socket } = await hybridConnectLine(uds, 5000);
  const g = await accepted;
  const hostPort = Number(/^OK (\d+)$/.exec(line)![1]);
  const toGuest = Buffer.from('hello guest, from the host\n');
  const toHost = Buffer.from('and hello host, from the guest\n');
  const hostGot = readToEnd(socket);
  socket.end(toGuest);
  const guestGot = await g.readAll();
  await g.write(toHost);
  g.end();
  // Guest -> host: to host port 6000 (<uds>_6000), and to 6999 where nobody listens (RST).
  const l = await hostListener(`${uds}_6000`, 'reply from the host program');
  const out = new RawStream(drv, 7000, 6000);
  await out.connect();
  const g2hSent = Buffer.from('guest to host program');
  await out.write(g2hSent);
  out.end();
  const got = await l.got;
  const reply = await out.readAll();
  const refused = new RawStream(drv, 7001, 6999);
  await refused.connect().catch(() => {});
  await drv.sync();
  await new Promise<void>((r) => l.server.close(() => r()));
  if (!guestGot.equals(toGuest) || !(await hostGot).equals(toHost) || !got.equals(g2hSent) || reply.toString() !== 'reply from the host program') throw new Error('traffic did not arrive intact');
  return { hostPort, toGuest, toHost, g2hGuestPort: 7000, g2hSent, g2hReply: reply.toString() };
}

test.before(() => {
  ensureTshark();
});

test('every packet both ways, decoded by tshark: link type 271, ports, ops, payload bytes', async (t) => {
  const fx = await startRawGuestDaemon('vsock-pcap-', (dir) => config(dir, { pcapPath: join(dir, 'all.pcap') }));
  t.teardown(() => fx.close());
  const sent = await traffic(fx);
  const file = join(fx.dir, 'all.pcap');
  // Read while the daemon still runs: every record is in the file already (no buffering).
  const raw = readFileSync(file);
  t.is(raw.readUInt32LE(0), 0xa1b2c3d4);
  t.is(raw.readUInt32LE(20), LINKTYPE_VSOCK);
  const frames = decode(file);
  const dev = fx.daemon.devices.get(CID)!;
  t.is(frames.length, dev.stats.txPackets + dev.stats.rxPackets, 'one record per packet moved, both directions');
  t.is(fx.daemon.captures.get(file)!.records, frames.length);
  for (const f of frames) {
    t.is(f['vsock.trans'], '2', 'transport virtio');
    const op = Number(f['vsock.virtio.op']);
    const expected = op === VSOCK_OP_REQUEST || op === VSOCK_OP_RESPONSE ? AF_VSOCK_OP_CONNECT : op === VSOCK_OP_RST || op === VSOCK_OP_SHUTDOWN ? AF_VSOCK_OP_DISCONNECT : op === VSOCK_OP_RW ? AF_VSOCK_OP_PAYLOAD : op === VSOCK_OP_CREDIT_UPDATE || op === VSOCK_OP_CREDIT_REQUEST ? AF_VSOCK_OP_CONTROL : -1;
    t.is(Number(f['vsock.op']), expected, `vsockmon op of virtio op ${op}`);
    t.is(Number(f['frame.len']), 76 + Number(f['vsock.virtio.len']), 'vsockmon + virtio header + payload');
    const cids = [Number(f['vsock.src_cid']), Number(f['vsock.dst_cid'])].sort();
    t.deepEqual(cids, [2, CID]);
  }
  const ops = (src: number, dst: number): number[] => frames.filter((f) => Number(f['vsock.src_port']) === src && Number(f['vsock.dst_port']) === dst).map((f) => Number(f['vsock.virtio.op']));
  // Host -> guest connection: REQUEST from the host's port, RESPONSE from 5000, data both ways.
  t.is(ops(sent.hostPort, 5000)[0], VSOCK_OP_REQUEST);
  t.is(ops(5000, sent.hostPort)[0], VSOCK_OP_RESPONSE);
  t.true(ops(sent.hostPort, 5000).includes(VSOCK_OP_SHUTDOWN), 'the host end half-closed');
  t.true(ops(5000, sent.hostPort).includes(VSOCK_OP_SHUTDOWN), 'the guest half-closed');
  t.deepEqual(streamBytes(frames, sent.hostPort, 5000), sent.toGuest);
  t.deepEqual(streamBytes(frames, 5000, sent.hostPort), sent.toHost);
  // Guest -> host connection, and the refused one (REQUEST answered by RST).
  t.is(ops(7000, 6000)[0], VSOCK_OP_REQUEST);
  t.is(ops(6000, 7000)[0], VSOCK_OP_RESPONSE);
  t.deepEqual(streamBytes(frames, 7000, 6000), sent.g2hSent);
  t.is(streamBytes(frames, 6000, 7000).toString(), sent.g2hReply);
  t.deepEqual(ops(7001, 6999), [VSOCK_OP_REQUEST]);
  t.deepEqual(ops(6999, 7001), [VSOCK_OP_RST]);
});

test('--pcap-snaplen keeps that many payload bytes; headers and the original length stay', async (t) => {
  const fx = await startRawGuestDaemon('vsock-pcap-snap-', (dir) => config(dir, { pcapPath: join(dir, 'snap.pcap'), pcapSnaplen: 4 }));
  t.teardown(() => fx.close());
  const sent = await traffic(fx);
  const file = join(fx.dir, 'snap.pcap');
  t.is(readFileSync(file).readUInt32LE(16), 76 + 4, 'the file header snaplen');
  const frames = decode(file);
  const rw = frames.filter((f) => Number(f['vsock.virtio.op']) === VSOCK_OP_RW && Number(f['vsock.src_port']) === sent.hostPort);
  t.true(rw.length > 0);
  for (const f of rw) {
    t.is(Number(f['frame.len']), 76 + Number(f['vsock.virtio.len']));
    t.is(Number(f['frame.cap_len']), 76 + Math.min(4, Number(f['vsock.virtio.len'])));
  }
  // tshark does not show a cut payload: the first data record's bytes, read directly.
  const records = pcapRecords(readFileSync(file));
  t.is(records.length, frames.length);
  const first = records.find((r) => r.data.readUInt16LE(32 + 30) === VSOCK_OP_RW && r.data.readUInt32LE(32 + 16) === sent.hostPort)!;
  t.is(first.data.length, 76 + 4);
  t.deepEqual(first.data.subarray(76), sent.toGuest.subarray(0, 4));
});

/** The records of a little-endian microsecond pcap file. */
function pcapRecords(b: Buffer): Array<{ origLen: number; data: Buffer }> {
  const out: Array<{ origLen: number; data: Buffer }> = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const incl = b.readUInt32LE(off + 8);
    out.push({ origLen: b.readUInt32LE(off + 12), data: b.subarray(off + 16, off + 16 + incl) });
    off += 16 + incl;
  }
  return out;
}

test('per-VM capture files: each VM to its own file, the others to --pcap', async (t) => {
  const fx = await startRawGuestDaemon('vsock-pcap-vm-', (dir) => ({
    vms: [
      { guestCid: 3, socketPath: join(dir, 'v3.sock'), udsPath: join(dir, 'vm.vsock'), pcapPath: join(dir, 'vm3.pcap') },
      { guestCid: 4, socketPath: join(dir, 'v4.sock'), udsPath: join(dir, 'vm4.vsock') },
    ],
    forwards: [],
    pcapPath: join(dir, 'rest.pcap'),
  }));
  t.teardown(() => fx.close());
  await traffic(fx); // CID 3
  const drv4 = fx.attach(4);
  await new RawStream(drv4, 9000, 9999).connect().catch(() => {});
  await drv4.sync();
  const vm3 = decode(join(fx.dir, 'vm3.pcap'));
  const rest = decode(join(fx.dir, 'rest.pcap'));
  t.true(vm3.length > 0);
  t.true(vm3.every((f) => [f['vsock.src_cid'], f['vsock.dst_cid']].includes('3')));
  t.true(rest.length > 0);
  t.true(rest.every((f) => [f['vsock.src_cid'], f['vsock.dst_cid']].includes('4')));
});

test('a crash loses nothing captured: a process killed with SIGKILL right after the packets', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-pcap-kill-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'crash.pcap');
  // A child: device + raw driver + capture; 50 refused REQUESTs (100 packets), then it
  // prints the count and kills itself before anything could be flushed at exit.
  const script = `
    const { VsockDevice } = await import(${JSON.stringify(fileURLToPath(new URL('../drivers/virtio-vsock/device/vsock-device.js', import.meta.url)))});
    const { PcapCapture } = await import(${JSON.stringify(fileURLToPath(new URL('../drivers/virtio-vsock/daemon/pcap-capture.js', import.meta.url)))});
    const { VsockRawDriver } = await import(${JSON.stringify(fileURLToPath(new URL('./support/vsock-raw-driver.js', import.meta.url)))});
    const dev = new VsockDevice({ guestCid: 3 });
    dev.tap = new PcapCapture(${JSON.stringify(file)});
    const drv = VsockRawDriver.sameThread(dev);
    for (let i = 0; i < 50; i++) { drv.send({ srcPort: 1000 + i, dstPort: 2000, op: 1 }); await drv.next((p) => p.header.dstPort === 1000 + i); }
    process.stdout.write(String(dev.stats.txPackets + dev.stats.rxPackets) + '\\n', () => process.kill(process.pid, 'SIGKILL'));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const signal = await new Promise<string | null>((resolve) => child.once('exit', (_code, sig) => resolve(sig)));
  t.is(signal, 'SIGKILL', err);
  const moved = Number(out.trim());
  t.is(moved, 100);
  const frames = decode(file);
  t.is(frames.length, moved, 'every packet moved before the kill is in the file');
  t.is(frames.filter((f) => Number(f['vsock.virtio.op']) === VSOCK_OP_RST).length, 50);
});

/** Hybrid CONNECT to a guest listener, one message each way: the VM is served. */
async function stillServes(fx: RawGuestDaemon, port: number): Promise<string> {
  const drv = fx.attach(CID);
  const accepted = acceptOnGuest(drv, port);
  const { line, socket } = await hybridConnectLine(join(fx.dir, 'vm.vsock'), port);
  const g = await accepted;
  socket.end('ping');
  const got = await g.readAll();
  socket.destroy();
  return `${line.split(' ')[0]} ${got.toString()}`;
}

test('a capture file in a missing folder, that is a folder, or on a full device: an error naming it, the VM served without capture', async (t) => {
  for (const [name, path, why] of [
    ['missing folder', (dir: string) => join(dir, 'no', 'such', 'x.pcap'), /the folder .*no\/such does not exist/],
    ['a folder', (dir: string) => dir, /cannot create it: it is a folder/],
    ['a full device', () => '/dev/full', /cannot write its header: no space left on the device/],
  ] as const) {
    const fx = await startRawGuestDaemon('vsock-pcap-bad-', (dir) => config(dir, { pcapPath: path(dir) }));
    try {
      const line = await fx.waitLog(/capture file/);
      t.regex(line, /error/, name);
      t.true(line.includes(path(fx.dir)), `${name}: the path is named: ${line}`);
      t.regex(line, why, name);
      t.regex(line, /served without capture/, name);
      t.is(fx.daemon.vms.get(CID)!.capture, null);
      t.is(await stillServes(fx, 5100), 'OK ping', name);
    } finally {
      await fx.close();
    }
  }
});

/** Fills the capture with big guest packets until its writes fail. */
async function fillCapture(fx: RawGuestDaemon, file: string): Promise<void> {
  const drv = fx.attach(CID);
  const uds = join(fx.dir, 'vm.vsock');
  const l = await hostListener(`${uds}_6000`, 'done');
  const s = new RawStream(drv, 7100, 6000);
  await s.connect();
  const capture = fx.daemon.captures.get(file)!;
  for (let i = 0; i < 64 && capture.active; i++) await s.write(Buffer.alloc(4096, i), 4096);
  s.end();
  await l.got;
  await s.readAll();
  await new Promise<void>((r) => l.server.close(() => r()));
}

async function checkFullDisk(t: import('ava').ExecutionContext, fx: RawGuestDaemon, file: string, reason: RegExp): Promise<void> {
  await fillCapture(fx, file);
  const capture = fx.daemon.captures.get(file)!;
  t.false(capture.active, 'the capture stopped');
  const line = await fx.waitLog(/write failed/);
  t.true(line.includes(file), `the file is named: ${line}`);
  t.regex(line, reason);
  t.regex(line, /served on/);
  t.regex(fx.daemon.renderMetrics(), new RegExp(`vsock_capture_up\\{file="${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"\\} 0`));
  // The file keeps whole records only: tshark reads it to the end.
  const frames = decode(file);
  t.is(frames.length, capture.records);
  t.is(statSync(file).size, capture.bytesWritten);
  t.is(await stillServes(fx, 5200), 'OK ping', 'the VM is served on');
}

test('a full disk (a 64 KiB tmpfs) stops the capture with a message naming the file; the file stays readable; the VM is served on', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'vsock-pcap-tmpfs-'));
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { encoding: 'utf8' });
  if (mount.status !== 0) {
    rmSync(mnt, { recursive: true, force: true });
    t.log(`cannot mount a tmpfs here (${mount.stderr.trim()}): the injected-error test covers this path`);
    t.pass();
    return;
  }
  t.teardown(() => {
    spawnSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  });
  const file = join(mnt, 'full.pcap');
  const fx = await startRawGuestDaemon('vsock-pcap-full-', (dir) => config(dir, { pcapPath: file }));
  t.teardown(() => fx.close());
  await checkFullDisk(t, fx, file, /no space left on the device/);
});

test('an injected write error (EIO) stops the capture the same way', async (t) => {
  let writes = 0;
  const ops: PcapFileOps = {
    ...nodeFileOps,
    write: (fd, buf, offset, length) => {
      if (++writes === 40) {
        // half a record reaches the file, then the device fails
        nodeFileOps.write(fd, buf, offset, Math.floor(length / 2));
        throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
      }
      return nodeFileOps.write(fd, buf, offset, length);
    },
  };
  const dir = mkdtempSync(join(tmpdir(), 'vsock-pcap-eio-'));
  mkdirSync(join(dir, 'cap'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cap', 'eio.pcap');
  const fx = await startRawGuestDaemon('vsock-pcap-eio-', (d) => config(d, { pcapPath: file }), { pcapFileOps: ops });
  t.teardown(() => fx.close());
  await checkFullDisk(t, fx, file, /write failed after \d+ packets .*: EIO/);
});
