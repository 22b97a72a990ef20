// The vhost-user back-end server against a fake QEMU: the test is the front-end (sends
// what QEMU 7.2 sends to a vhost-user-vsock backend) and the guest driver (writes
// descriptors into a memfd "guest RAM" with VirtqueueDriver, kicks through an eventfd,
// waits for the call eventfd). Guest RAM has two regions around a hole at
// 0xa0000-0xc0000, the second at a non-zero mmap offset, as QEMU's q35 table does.
import test, { type ExecutionContext } from 'ava';
import { once } from 'node:events';
import { ftruncateSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { EventFd } from '../kernel/native/fd-watch.js';
import * as n from '../kernel/native/index.js';
import type { DeviceContext, VirtioDeviceModel } from '../kernel/transport/virtio-device.js';
import type { VirtqueueDevice } from '../kernel/virtqueue/device-queue.js';
import { SplitVirtqueueDriver } from '../kernel/virtqueue/driver-queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, featureBit } from '../kernel/virtqueue/layout.js';
import { PackedVirtqueueDriver } from '../kernel/virtqueue/packed-driver-queue.js';
import { FRESH_PACKED_STATE, encodePackedBase } from '../kernel/virtqueue/packed-layout.js';
import type { VirtqueueDriver } from '../kernel/virtqueue/queue.js';
import type { MemoryRegionDescription } from '../kernel/vhost-user/codec.js';
import { encodeMemTable, encodeMessage, encodeU64, encodeVringAddr, encodeVringFile, encodeVringState } from '../kernel/vhost-user/codec.js';
import type { VhostUserError, VhostUserErrorCode } from '../kernel/vhost-user/errors.js';
import { VhostUserFrontend } from '../kernel/vhost-user/frontend-client.js';
import { Request, VHOST_USER_F_PROTOCOL_FEATURES } from '../kernel/vhost-user/protocol.js';
import { type VhostUserServer, startVhostUserServer } from '../kernel/vhost-user/server.js';
import { EchoDevice } from './support/echo-device.js';

const RAM_SIZE = 0x400000; // 4 MiB of "guest RAM"
const HOLE_START = 0xa0000;
const HOLE_END = 0xc0000;
// QEMU's own virtual addresses of the two regions: unrelated to guest-physical ones.
const USER_BASE_0 = 0x7f5a00000000;
const USER_BASE_1 = 0x7f5b00040000;
const RING_SIZE = 128;
const DESC_GPA = 0x100000;
const AVAIL_GPA = 0x101000;
const USED_GPA = 0x102000;
const CID = 3;

/** QEMU's table for one memfd: [0, 0xa0000) at offset 0 and [0xc0000, end) at offset 0xc0000. */
function qemuRegions(size = RAM_SIZE): MemoryRegionDescription[] {
  return [
    { guestPhysAddr: 0, memorySize: HOLE_START, userspaceAddr: USER_BASE_0, mmapOffset: 0 },
    { guestPhysAddr: HOLE_END, memorySize: size - HOLE_END, userspaceAddr: USER_BASE_1, mmapOffset: HOLE_END },
  ];
}

/** Guest-physical -> QEMU user address, for ring addresses (SET_VRING_ADDR). */
function userAddr(gpa: number): number {
  return gpa < HOLE_START ? USER_BASE_0 + gpa : USER_BASE_1 + (gpa - HOLE_END);
}

/** EchoDevice with a vsock-like config (le64 guest CID) that records what the server calls. */
class RecordingEcho implements VirtioDeviceModel {
  readonly inner = new EchoDevice(256);
  readonly name = 'echo';
  readonly deviceId = this.inner.deviceId;
  readonly features = this.inner.features;
  readonly numQueues = 1;
  readonly maxQueueSize = 256;
  calls: string[] = [];
  ctx: DeviceContext | null = null;
  config(): Uint8Array {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(CID));
    return b;
  }
  activate(ctx: DeviceContext, features: bigint): void {
    this.calls.push(`activate 0x${features.toString(16)}`);
    this.ctx = ctx;
    this.inner.activate(ctx);
  }
  queueReady(index: number, q: VirtqueueDevice): void {
    this.calls.push(`queueReady ${index} size ${q.size}`);
    this.inner.queueReady(index, q);
  }
  queueStopped(index: number): void {
    this.calls.push(`queueStopped ${index}`);
    this.inner.queueStopped();
  }
  kick(index: number): void {
    this.inner.kick();
    void index;
  }
  reset(): void {
    this.calls.push('reset');
    this.inner.reset();
  }
}

interface Fixture {
  dir: string;
  path: string;
  server: VhostUserServer;
  model: RecordingEcho;
  logs: string[];
  cleanups: (() => void)[];
}

async function fixture(t: ExecutionContext, opts: { memoryTableTimeoutMs?: number } = {}): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-vhost-'));
  const path = join(dir, 'vhost.sock');
  const model = new RecordingEcho();
  const logs: string[] = [];
  const server = await startVhostUserServer({ socketPath: path, model, log: (level, msg) => logs.push(`${level}: ${msg}`), ...opts });
  const f: Fixture = { dir, path, server, model, logs, cleanups: [] };
  t.teardown(async () => {
    for (const c of f.cleanups.reverse()) {
      try {
        c();
      } catch {
        // keep cleaning
      }
    }
    await server.close();
    rmSync(dir, { recursive: true, force: true });
    if (!t.passed) t.log(logs.join('\n'));
  });
  return f;
}

/** Guest RAM: a memfd, mapped by the "guest" (shared, or private to simulate share=off). */
function guestRam(f: Fixture, size = RAM_SIZE, shared = true): { fd: number; bytes: Uint8Array } {
  const fd = n.memfdCreate('guest-ram');
  ftruncateSync(fd, size);
  const map = n.mmap(fd, size, 0, true, shared);
  f.cleanups.push(() => n.close(fd), () => n.munmap(map));
  return { fd, bytes: new Uint8Array(map) };
}

function connect(f: Fixture): VhostUserFrontend {
  const c = VhostUserFrontend.connect(f.path);
  f.cleanups.push(() => c.close());
  return c;
}

function eventFd(f: Fixture): EventFd {
  const e = new EventFd();
  f.cleanups.push(() => e.close());
  return e;
}

/** The driver half over the guest RAM at the fixed ring addresses. */
function driverQueue(ram: Uint8Array): SplitVirtqueueDriver<number> {
  const part = (gpa: number, bytes: number) => ({ bytes: ram.subarray(gpa, gpa + bytes), addr: gpa });
  return new SplitVirtqueueDriver<number>({
    name: 'test driver q0',
    index: 0,
    size: RING_SIZE,
    eventIdx: true,
    desc: part(DESC_GPA, 16 * RING_SIZE),
    avail: part(AVAIL_GPA, 6 + 2 * RING_SIZE),
    used: part(USED_GPA, 6 + 8 * RING_SIZE),
  });
}

const FEATURES = featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | (1n << VHOST_USER_F_PROTOCOL_FEATURES);

/** What QEMU 7.2 sends when vhost-user-vsock realizes (before the guest driver runs). */
async function handshake(c: VhostUserFrontend, call: EventFd): Promise<{ features: bigint; protocol: bigint; config: Buffer }> {
  const features = await c.getFeatures();
  const protocol = await c.getProtocolFeatures();
  await c.setProtocolFeatures(protocol);
  c.ackEveryRequest = true; // REPLY_ACK negotiated: every request is acked
  await c.setOwner();
  await c.getFeatures();
  await c.setVringCall(0, call.fd);
  const config = await c.getConfig(0, 8);
  return { features, protocol, config };
}

/** What QEMU sends at DRIVER_OK (vhost_dev_start), in its order. */
async function startDevice(c: VhostUserFrontend, ramFd: number, kick: EventFd, call: EventFd, base = 0, features = FEATURES): Promise<void> {
  await c.setFeatures(features);
  await c.setMemTable(qemuRegions(), [ramFd, ramFd]);
  await c.setVringNum(0, RING_SIZE);
  await c.setVringBase(0, base);
  await c.setVringAddr(0, userAddr(DESC_GPA), userAddr(USED_GPA), userAddr(AVAIL_GPA));
  await c.setVringKick(0, kick.fd);
  await c.setVringCall(0, call.fd);
  await c.setVringEnable(0, true);
}

function nextCall(call: EventFd): Promise<number> {
  return new Promise((resolve) => {
    call.onReadable((count) => {
      call.stopWatching();
      resolve(count);
    });
  });
}

/**
 * Echo round trips: `count` chains [request in region 0 (below the hole) | response in
 * region 1], kick, wait for the interrupt, check the used ring and the echoed bytes.
 */
async function echo(t: ExecutionContext, ram: Uint8Array, q: VirtqueueDriver<number>, kick: EventFd, call: EventFd, count: number, seed: number): Promise<void> {
  const REQ = 0x10000; // region 0
  const RESP = 0x200000; // region 1
  for (let i = 0; i < count; i++) {
    ram.fill((seed + i) & 0xff, REQ + i * 64, REQ + i * 64 + 64);
    ram.fill(0, RESP + i * 64, RESP + i * 64 + 64);
    q.add(i, [[REQ + i * 64, 64]], [[RESP + i * 64, 64]]);
  }
  const interrupted = nextCall(call);
  if (q.publish()) kick.write(1);
  await interrupted;
  const got: [number, number][] = [];
  q.drainUsed((token, len) => got.push([token, len]));
  t.deepEqual(got, Array.from({ length: count }, (_, i) => [i, 64]));
  for (let i = 0; i < count; i++) t.is(ram[RESP + i * 64 + 63], (seed + i) & 0xff);
}

test('full QEMU-like session: handshake, echo through the rings, reboot with a new table, disconnect, second client', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const connected = once(f.server, 'client-connected');
  const c = connect(f);
  const [firstId] = await connected;

  const hs = await handshake(c, call);
  t.is(hs.features, f.model.features | (1n << 30n));
  t.is(hs.protocol, (1n << 3n) | (1n << 9n)); // REPLY_ACK | CONFIG
  t.is(hs.config.readBigUInt64LE(0), BigInt(CID));
  t.is(await c.getQueueNum(), 1);

  const ram = guestRam(f);
  const started = once(f.server, 'ring-started');
  await startDevice(c, ram.fd, kick, call);
  t.deepEqual(await started, [firstId, 0]);
  t.deepEqual(f.model.calls, [`activate 0x${(FEATURES & ~(1n << 30n)).toString(16)}`, `queueReady 0 size ${RING_SIZE}`]);
  t.truthy(f.server.currentClient);

  let q = driverQueue(ram.bytes);
  await echo(t, ram.bytes, q, kick, call, 5, 1);
  await echo(t, ram.bytes, q, kick, call, 3, 50);

  // Guest reboot: QEMU 7.2 disables the ring, stops it (GET_VRING_BASE), and later starts
  // again with a fresh SET_MEM_TABLE and no SET_OWNER.
  await c.setVringEnable(0, false);
  t.is(await c.getVringBase(0), 8);
  t.deepEqual(f.model.calls.slice(2), ['queueStopped 0', 'reset']);

  const ram2 = guestRam(f); // new guest RAM: the old mapping must not be used any more
  const kick2 = eventFd(f);
  const restarted = once(f.server, 'ring-started');
  await startDevice(c, ram2.fd, kick2, call, 0);
  await restarted;
  t.deepEqual(f.model.calls.slice(4), [`activate 0x${(FEATURES & ~(1n << 30n)).toString(16)}`, `queueReady 0 size ${RING_SIZE}`]);
  q = driverQueue(ram2.bytes);
  await echo(t, ram2.bytes, q, kick2, call, 4, 100);
  t.is(f.model.inner.echoed, 12);

  // QEMU goes away: everything is stopped and reset; the same path takes the next QEMU.
  const gone = once(f.server, 'client-disconnected');
  c.close();
  const [goneId, end] = await gone;
  t.is(goneId, firstId);
  t.is(end.reason, 'eof');
  t.deepEqual(f.model.calls.slice(6), ['queueStopped 0', 'reset']);
  t.is(f.server.currentClient, null);

  const connected2 = once(f.server, 'client-connected');
  const c2 = connect(f);
  const [secondId] = await connected2;
  t.not(secondId, firstId);
  const call2 = eventFd(f);
  const kick3 = eventFd(f);
  await handshake(c2, call2);
  const ram3 = guestRam(f);
  await startDevice(c2, ram3.fd, kick3, call2);
  await echo(t, ram3.bytes, driverQueue(ram3.bytes), kick3, call2, 2, 7);
  t.is(f.model.inner.echoed, 14);
});

/** The driver half of a packed ring over the same guest RAM (driver area at AVAIL_GPA, device area at USED_GPA). */
function packedDriverQueue(ram: Uint8Array): PackedVirtqueueDriver<number> {
  const part = (gpa: number, bytes: number) => ({ bytes: ram.subarray(gpa, gpa + bytes), addr: gpa });
  return new PackedVirtqueueDriver<number>({ name: 'test packed driver q0', index: 0, size: RING_SIZE, eventIdx: true, desc: part(DESC_GPA, 16 * RING_SIZE), avail: part(AVAIL_GPA, 4), used: part(USED_GPA, 4) });
}

test('packed ring session: the vring base carries positions and wrap counters both ways (GET_VRING_BASE / SET_VRING_BASE), across laps and a stop', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const c = connect(f);
  const hs = await handshake(c, call);
  t.is(hs.features & featureBit(VIRTIO_F_RING_PACKED), featureBit(VIRTIO_F_RING_PACKED), 'the back end offers the packed layout');
  const packedFeatures = FEATURES | featureBit(VIRTIO_F_RING_PACKED);
  const ram = guestRam(f);
  const started = once(f.server, 'ring-started');
  // QEMU's base for a fresh packed ring: positions 0, wrap counters 1, in both halves.
  t.is(encodePackedBase(FRESH_PACKED_STATE), 0x80008000);
  await startDevice(c, ram.fd, kick, call, encodePackedBase(FRESH_PACKED_STATE), packedFeatures);
  await started;
  t.true(f.logs.some((l) => /ring 0 running \(packed, size 128/.test(l)), 'the ring runs packed');
  const q = packedDriverQueue(ram.bytes);
  // 200 chains of two descriptors: 400 descriptors, three laps of 128 and 16 more.
  for (let round = 0; round < 4; round++) await echo(t, ram.bytes, q, kick, call, 50, round * 50);
  // VM stop: GET_VRING_BASE stops the ring; its reply is where both halves stand.
  await c.setVringEnable(0, false);
  const base = await c.getVringBase(0);
  t.is(base, 16 | (16 << 16), 'avail and used at 16, both wrap counters 0 after three laps');
  // VM continue: QEMU gives the base back and the ring goes on where it stood.
  const restarted = once(f.server, 'ring-started');
  await startDevice(c, ram.fd, kick, call, base, packedFeatures);
  await restarted;
  await echo(t, ram.bytes, q, kick, call, 60, 7);
  t.is(f.model.inner.echoed, 260);
  t.is(f.logs.filter((l) => /^warn/.test(l) && /not shared|refused|broken/.test(l)).length, 0, f.logs.join('\n'));
});

test('a second QEMU that connects while one is served waits, and is served when the first leaves', async (t) => {
  const f = await fixture(t);
  const c1 = connect(f);
  await once(f.server, 'client-connected');
  t.is((await c1.getFeatures()) & (1n << 30n), 1n << 30n);
  const c2 = connect(f);
  // c2 is queued: its request is answered only after c1 leaves.
  const features2 = c2.getFeatures();
  await c1.getFeatures(); // the server has seen c2's connection by now or soon; c1 still served
  const next = once(f.server, 'client-connected');
  c1.close();
  await next;
  t.is((await features2) & (1n << 30n), 1n << 30n);
});

test('ring addresses are translated from QEMU user addresses; memory table replaced while running restarts the ring', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const c = connect(f);
  await handshake(c, call);
  const ram = guestRam(f);
  await startDevice(c, ram.fd, kick, call);
  const q = driverQueue(ram.bytes);
  await echo(t, ram.bytes, q, kick, call, 2, 9);
  // Memory hot-plug style: a new table while the ring runs (same RAM, mapped anew).
  const stopped = once(f.server, 'ring-stopped');
  const started = once(f.server, 'ring-started');
  await c.setMemTable(qemuRegions(), [ram.fd, ram.fd]);
  await stopped;
  await started;
  await echo(t, ram.bytes, q, kick, call, 3, 20);
  t.is(await c.getVringBase(0), 5);
});

test('a kick fd with the no-fd flag means polling', async (t) => {
  const f = await fixture(t);
  const call = eventFd(f);
  const c = connect(f);
  await handshake(c, call);
  const ram = guestRam(f);
  await c.setFeatures(FEATURES);
  await c.setMemTable(qemuRegions(), [ram.fd, ram.fd]);
  await c.setVringNum(0, RING_SIZE);
  await c.setVringBase(0, 0);
  await c.setVringAddr(0, userAddr(DESC_GPA), userAddr(USED_GPA), userAddr(AVAIL_GPA));
  await c.setVringKick(0, -1);
  await c.setVringEnable(0, true);
  const q = driverQueue(ram.bytes);
  q.add(1, [[0x1000, 8]], [[0x300000, 8]]);
  const interrupted = nextCall(call);
  q.publish(); // no kick: the server polls
  await interrupted;
  let len = -1;
  q.drainUsed((_token, l) => (len = l));
  t.is(len, 8);
});

test('without PROTOCOL_FEATURES acked, a ring runs as soon as it has its kick fd', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const c = connect(f);
  const ram = guestRam(f);
  await c.getFeatures();
  const started = once(f.server, 'ring-started');
  // No protocol features: no acks either; GET_VRING_BASE at the end orders everything.
  await c.setFeatures(FEATURES & ~(1n << 30n));
  await c.setMemTable(qemuRegions(), [ram.fd, ram.fd]);
  await c.setVringNum(0, RING_SIZE);
  await c.setVringAddr(0, userAddr(DESC_GPA), userAddr(USED_GPA), userAddr(AVAIL_GPA));
  await c.setVringCall(0, call.fd);
  await c.setVringKick(0, kick.fd);
  await started;
  await echo(t, ram.bytes, driverQueue(ram.bytes), kick, call, 3, 3);
  t.is(await c.getVringBase(0), 3);
});

// ---- refused messages: the client is dropped, the server keeps serving ----------------------

async function expectDropped(t: ExecutionContext, f: Fixture, code: VhostUserErrorCode, send: (c: VhostUserFrontend) => void | Promise<void>, closeAfter = false): Promise<VhostUserError> {
  const c = connect(f);
  await once(f.server, 'client-connected');
  const refused = once(f.server, 'protocol-error');
  const disconnected = once(f.server, 'client-disconnected');
  await send(c);
  if (closeAfter) c.close();
  const [err] = (await refused) as [VhostUserError];
  t.is(err.code, code, err.message);
  const [, end] = await disconnected;
  t.is(end.reason, 'error');
  if (!closeAfter) {
    // The server closed the connection: end of stream, or a reset when it left bytes unread.
    const closed = await c.socket.readExactly(1).then(
      (r) => r === null,
      (e: { code?: string }) => e.code === 'ECONNRESET',
    );
    t.true(closed);
  }
  c.close();
  // ... and the next client is served.
  const c2 = connect(f);
  t.is((await c2.getFeatures()) & (1n << 30n), 1n << 30n);
  c2.close();
  await once(f.server, 'client-disconnected');
  t.true(f.logs.some((l) => l.includes(err.message)), 'the reason is logged');
  return err;
}

test('refused: payload of the wrong size', async (t) => {
  const f = await fixture(t);
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_SIZE', (c) => c.sendRaw(encodeMessage(Request.SET_FEATURES, 1, Buffer.alloc(4))));
  t.regex(err.message, /SET_FEATURES \(2\): payload of 4 bytes, expected 8/);
});

test('refused: unknown request', async (t) => {
  const f = await fixture(t);
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_UNKNOWN_REQUEST', (c) => c.sendRaw(encodeMessage(99, 1)));
  t.regex(err.message, /unknown request 99/);
});

test('refused: wrong version bits', async (t) => {
  const f = await fixture(t);
  await expectDropped(t, f, 'ERR_VHOST_USER_VERSION', (c) => c.sendRaw(encodeMessage(Request.GET_FEATURES, 2)));
});

test('refused: SET_VRING_KICK without an fd and without the no-fd flag', async (t) => {
  const f = await fixture(t);
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_FDS', (c) => c.sendRaw(encodeMessage(Request.SET_VRING_KICK, 1, encodeVringFile(0, false))));
  t.regex(err.message, /ring 0: no fd came with the message/);
});

test('refused: a region that does not fit its fd', async (t) => {
  const f = await fixture(t);
  const small = guestRam(f, 0x100000); // 1 MiB memfd, table claims 4 MiB
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_MEMORY', (c) => c.sendRaw(encodeMessage(Request.SET_MEM_TABLE, 1, encodeMemTable(qemuRegions())), [small.fd, small.fd]));
  t.regex(err.message, /region 1 .* does not fit its fd/);
});

test('refused: a region whose size overflows', async (t) => {
  const f = await fixture(t);
  const ram = guestRam(f);
  const regions = [{ guestPhysAddr: 2 ** 52, memorySize: 2 ** 52, userspaceAddr: 0x1000, mmapOffset: 0 }];
  await expectDropped(t, f, 'ERR_VHOST_USER_MEMORY', (c) => c.sendRaw(encodeMessage(Request.SET_MEM_TABLE, 1, encodeMemTable(regions)), [ram.fd]));
});

test('refused: too many regions', async (t) => {
  const f = await fixture(t);
  const table = encodeMemTable(qemuRegions().slice(0, 1));
  table.writeUInt32LE(9, 0); // claims 9 regions in a 1-region payload
  await expectDropped(t, f, 'ERR_VHOST_USER_PAYLOAD', (c) => c.sendRaw(encodeMessage(Request.SET_MEM_TABLE, 1, table)));
});

test('refused: SET_MEM_TABLE with fewer fds than regions', async (t) => {
  const f = await fixture(t);
  const ram = guestRam(f);
  await expectDropped(t, f, 'ERR_VHOST_USER_FDS', (c) => c.sendRaw(encodeMessage(Request.SET_MEM_TABLE, 1, encodeMemTable(qemuRegions())), [ram.fd]));
});

test('refused: a memory table without fds says guest RAM is not shared', async (t) => {
  const f = await fixture(t);
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_MEMORY_NOT_SHARED', (c) => c.sendRaw(encodeMessage(Request.SET_MEM_TABLE, 1, Buffer.alloc(8))));
  t.regex(err.message, /share=on/);
});

test('refused: truncated header', async (t) => {
  const f = await fixture(t);
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_TRUNCATED', (c) => c.sendRaw(encodeMessage(Request.GET_FEATURES, 1).subarray(0, 6)), true);
  t.regex(err.message, /6 of 12 bytes/);
});

test('refused: truncated payload', async (t) => {
  const f = await fixture(t);
  await expectDropped(t, f, 'ERR_VHOST_USER_TRUNCATED', (c) => c.sendRaw(encodeMessage(Request.SET_FEATURES, 1, encodeU64(1)).subarray(0, 16)), true);
});

test('refused: ring addresses outside the memory table (in the hole)', async (t) => {
  const f = await fixture(t);
  const ram = guestRam(f);
  const kick = eventFd(f);
  const err = await expectDropped(t, f, 'ERR_VHOST_USER_RING', async (c) => {
    c.send(Request.SET_FEATURES, encodeU64(FEATURES));
    c.send(Request.SET_MEM_TABLE, encodeMemTable(qemuRegions()), [ram.fd, ram.fd]);
    c.send(Request.SET_VRING_NUM, encodeVringState(0, RING_SIZE));
    c.send(Request.SET_VRING_ADDR, encodeVringAddr({ index: 0, desc: USER_BASE_0 + HOLE_START, used: userAddr(USED_GPA), avail: userAddr(AVAIL_GPA) }));
    c.send(Request.SET_VRING_KICK, encodeVringFile(0), [kick.fd]);
    c.send(Request.SET_VRING_ENABLE, encodeVringState(0, 1));
  });
  t.regex(err.message, /descriptor table at user address/);
});

test('refused: features that were not offered; a failed request with NEED_REPLY is nacked first', async (t) => {
  const f = await fixture(t);
  await expectDropped(t, f, 'ERR_VHOST_USER_FEATURES', async (c) => {
    c.send(Request.SET_FEATURES, encodeU64(1n << 60n), [], 1 | 8);
    const r = await c.readReply();
    t.is(r.payload.readBigUInt64LE(0), 1n);
  });
});

test('refused: a ring index the device does not have', async (t) => {
  const f = await fixture(t);
  await expectDropped(t, f, 'ERR_VHOST_USER_PAYLOAD', (c) => c.sendRaw(encodeMessage(Request.SET_VRING_NUM, 1, encodeVringState(5, 128))));
});

test('refused: log and inflight requests (not offered)', async (t) => {
  const f = await fixture(t);
  await expectDropped(t, f, 'ERR_VHOST_USER_UNSUPPORTED', (c) => c.sendRaw(encodeMessage(Request.GET_INFLIGHT_FD, 1, Buffer.alloc(20))));
  await expectDropped(t, f, 'ERR_VHOST_USER_UNSUPPORTED', (c) => c.sendRaw(encodeMessage(Request.SET_LOG_BASE, 1, Buffer.alloc(16))));
});

test('guest RAM that is not shared is reported (kicks while the available ring never changes)', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const c = connect(f);
  await handshake(c, call);
  const fd = n.memfdCreate('private-ram');
  ftruncateSync(fd, RAM_SIZE);
  const priv = n.mmap(fd, RAM_SIZE, 0, true, false); // what QEMU does without share=on
  f.cleanups.push(() => n.close(fd), () => n.munmap(priv));
  await startDevice(c, fd, kick, call);
  let warning: VhostUserError | null = null;
  f.server.on('warning', (err: VhostUserError) => (warning = err));
  const q = driverQueue(new Uint8Array(priv));
  // Kicks may coalesce in the eventfd: kick until the server has seen enough of them.
  for (let i = 0; i < 20 && warning === null; i++) {
    q.add(i, [[0x1000, 8]], [[0x300000, 8]]);
    q.publish();
    kick.write(1);
    await c.getFeatures(); // a round trip: the server's loop ran
    await new Promise((r) => setImmediate(r));
  }
  const err = warning as VhostUserError | null;
  t.is(err?.code, 'ERR_VHOST_USER_MEMORY_NOT_SHARED');
  t.regex(err?.message ?? '', /share=on/);
  t.is(f.server.currentClient !== null, true); // a warning, not a drop
});

test('a device start without a memory table (QEMU without shareable RAM) is reported', async (t) => {
  const f = await fixture(t, { memoryTableTimeoutMs: 1 });
  const c = connect(f);
  const call = eventFd(f);
  await handshake(c, call);
  const warned = once(f.server, 'warning');
  // What QEMU 7.2 sends when its RAM has no fd: SET_FEATURES, then it gives up.
  await c.setFeatures(FEATURES);
  const [err] = (await warned) as [VhostUserError];
  t.is(err.code, 'ERR_VHOST_USER_MEMORY_NOT_SHARED');
  t.regex(err.message, /no memory table.*share=on/);
});

test('SET_CONFIG is refused without dropping the front-end; GET_CONFIG outside the space gets an empty reply', async (t) => {
  const f = await fixture(t);
  const c = connect(f);
  const call = eventFd(f);
  await handshake(c, call);
  const nack = await t.throwsAsync(c.post(Request.SET_CONFIG, Buffer.concat([encodeVringState(0, 8), Buffer.alloc(4), Buffer.alloc(8)])));
  t.regex(nack!.message, /answered 1/);
  t.deepEqual([...(await c.getConfig(4, 8))], []);
  t.is((await c.getConfig(0, 8)).readBigUInt64LE(0), BigInt(CID)); // still served
});

test('a device model that throws is reported and the session goes on', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const c = connect(f);
  await handshake(c, call);
  const ram = guestRam(f);
  await startDevice(c, ram.fd, kick, call);
  const original = f.model.kick.bind(f.model);
  f.model.kick = () => {
    throw new Error('model bug');
  };
  const reported = once(f.server, 'device-error');
  kick.write(1);
  const [err] = (await reported) as [VhostUserError];
  t.is(err.code, 'ERR_VHOST_USER_DEVICE');
  t.regex(err.message, /kick threw: Error: model bug/);
  f.model.kick = original;
  await echo(t, ram.bytes, driverQueue(ram.bytes), kick, call, 2, 4);
});

test('a stale socket file is replaced; a path with a live listener is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-vhost-stale-'));
  const path = join(dir, 'stale.sock');
  const model = new RecordingEcho();
  try {
    n.close(n.unixListen(path, 1)); // a socket file nobody listens on any more
    const server = await startVhostUserServer({ socketPath: path, model, log: () => {} });
    try {
      const err = await t.throwsAsync(startVhostUserServer({ socketPath: path, model, log: () => {} }));
      t.is((err as VhostUserError).code, 'ERR_VHOST_USER_SOCKET');
      t.regex(err!.message, /another back-end is listening/);
      const c = VhostUserFrontend.connect(path);
      t.true((await c.getFeatures()) !== 0n);
      c.close();
    } finally {
      await server.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('guest RAM above 4 GiB: a 5 GiB region is mapped in chunks; rings and buffers there work', async (t) => {
  const f = await fixture(t);
  const GiB = 2 ** 30;
  const fd = n.memfdCreate('big-guest-ram'); // sparse: only touched pages use memory
  ftruncateSync(fd, 7 * GiB);
  f.cleanups.push(() => n.close(fd));
  const U2 = 0x7f2000000000;
  const regions: MemoryRegionDescription[] = [
    ...qemuRegions(2 * GiB),
    { guestPhysAddr: 4 * GiB, memorySize: 5 * GiB, userspaceAddr: U2, mmapOffset: 2 * GiB },
  ];
  const fileOffset = (gpa: number): number => (gpa >= 4 * GiB ? gpa - 2 * GiB : gpa);
  /** The "guest" maps a 64 KiB window of its RAM at a guest-physical address. */
  const window = (gpa: number): Uint8Array => {
    const m = n.mmap(fd, 0x10000, fileOffset(gpa));
    f.cleanups.push(() => n.munmap(m));
    return new Uint8Array(m);
  };
  const DESC = 6 * GiB - 0x10000; // last 64 KiB before the 6 GiB chunk boundary
  const RINGS = 6 * GiB; // avail and used in the next chunk
  const REQ = 8 * GiB + 0x1000; // third chunk
  const RESP = 0x10000; // region 0
  const descWin = window(DESC);
  const ringWin = window(RINGS);
  const reqWin = window(8 * GiB);
  const low = n.mmap(fd, 0x20000, 0);
  f.cleanups.push(() => n.munmap(low));
  const lowBytes = new Uint8Array(low);

  const kick = eventFd(f);
  const call = eventFd(f);
  const c = connect(f);
  await handshake(c, call);
  const mapped = once(f.server, 'memory-mapped');
  await c.setFeatures(FEATURES);
  await c.setMemTable(regions, [fd, fd, fd]);
  await mapped;
  await c.setVringNum(0, RING_SIZE);
  await c.setVringBase(0, 0);
  const u2 = (gpa: number): number => U2 + (gpa - 4 * GiB);
  await c.setVringAddr(0, u2(DESC), u2(RINGS + 0x1000), u2(RINGS));
  await c.setVringKick(0, kick.fd);
  await c.setVringEnable(0, true);

  const q = new SplitVirtqueueDriver<number>({
    name: 'high driver q0',
    index: 0,
    size: RING_SIZE,
    eventIdx: true,
    desc: { bytes: descWin.subarray(0, 16 * RING_SIZE), addr: DESC },
    avail: { bytes: ringWin.subarray(0, 6 + 2 * RING_SIZE), addr: RINGS },
    used: { bytes: ringWin.subarray(0x1000, 0x1000 + 6 + 8 * RING_SIZE), addr: RINGS + 0x1000 },
  });
  reqWin.fill(0x5a, 0x1000, 0x1040);
  q.add(1, [[REQ, 64]], [[RESP, 64]]);
  const interrupted = nextCall(call);
  if (q.publish()) kick.write(1);
  await interrupted;
  const got: [number, number][] = [];
  q.drainUsed((token, len) => got.push([token, len]));
  t.deepEqual(got, [[1, 64]]);
  t.is(lowBytes[RESP + 63], 0x5a);
});

test('a ring broken by the guest (impossible avail.idx) signals its SET_VRING_ERR eventfd', async (t) => {
  const f = await fixture(t);
  const kick = eventFd(f);
  const call = eventFd(f);
  const err = eventFd(f);
  const c = connect(f);
  await handshake(c, call);
  await c.post(Request.SET_VRING_ERR, encodeVringFile(0), [err.fd]);
  const ram = guestRam(f);
  await startDevice(c, ram.fd, kick, call);
  const signalled = nextCall(err);
  new DataView(ram.bytes.buffer).setUint16(AVAIL_GPA + 2, 1000, true); // 1000 entries ahead of 0, ring of 128
  kick.write(1);
  t.true((await signalled) >= 1);
  t.true(f.logs.some((l) => /avail\.idx 1000 is 1000 entries ahead/.test(l)));
});
