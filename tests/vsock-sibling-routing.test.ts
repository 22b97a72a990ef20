// Sibling routing in the vsock device (sibling-router.ts, sibling-links.ts,
// sibling-queue.ts): guests of one router that share a group reach each other's CIDs;
// the guests run the protocol end to end, the device copies packets across, checks
// credit, and resets both ends when one goes away. Every guest here is a raw test
// driver over the in-process transport.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import type { VsockMuxer } from '../drivers/virtio-vsock/device/muxer.js';
import { SiblingRouter } from '../drivers/virtio-vsock/device/sibling-router.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import {
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SEQ_EOM,
  VSOCK_SEQ_EOR,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_SEQPACKET,
  VSOCK_TYPE_STREAM,
} from '../drivers/virtio-vsock/header.js';
import { RawStream, VsockRawDriver, type RawDriverOptions } from './support/vsock-raw-driver.js';

interface Vm {
  dev: VsockDevice;
  drv: VsockRawDriver;
  logs: string[];
}

interface World {
  router: SiblingRouter<VsockMuxer>;
  vms: Map<number, Vm>;
  vm(cid: number): Vm;
  close(): Promise<void>;
}

/** Devices on one router: cid -> groups (and raw driver options). */
function world(spec: Array<{ cid: number; groups: string[]; drv?: RawDriverOptions; seqpacket?: boolean }>): World {
  const router = new SiblingRouter<VsockMuxer>();
  const vms = new Map<number, Vm>();
  for (const s of spec) {
    const logs: string[] = [];
    const dev = new VsockDevice({ guestCid: s.cid, router, groups: s.groups, log: (m) => logs.push(m) });
    const drv = VsockRawDriver.sameThread(dev, { seqpacket: s.seqpacket ?? true, ...s.drv });
    vms.set(s.cid, { dev, drv, logs });
  }
  return {
    router,
    vms,
    vm: (cid) => vms.get(cid)!,
    close: async () => {
      for (const v of vms.values()) {
        await v.drv.close();
        v.dev.dispose();
      }
    },
  };
}

function sha(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** Opens a stream connection from `a` (port aPort) to `b` (port bPort); returns both ends. */
async function open(w: World, a: number, aPort: number, b: number, bPort: number, type = VSOCK_TYPE_STREAM): Promise<{ client: RawStream; server: RawStream }> {
  const client = new RawStream(w.vm(a).drv, aPort, bPort, 64 * 1024, { cid: b, type });
  const server = new RawStream(w.vm(b).drv, bPort, -1, 64 * 1024, { cid: a, type });
  const accepted = server.accept();
  const connected = client.connect();
  await accepted;
  await connected;
  return { client, server };
}

test('two guests of one group: REQUEST/RESPONSE, 1 MiB each way SHA-256 intact through 4 KiB rx buffers, half-close, RST forgets the link on both sides', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g', 'other'] },
  ]);
  try {
    const { client, server } = await open(w, 3, 1000, 4, 2000);
    t.is(w.vm(3).dev.siblingConnections, 1);
    t.is(w.vm(4).dev.siblingConnections, 1);
    const up = pattern(1 << 20, 1);
    const down = pattern(1 << 20, 2);
    // 64 KiB packets from the sender become several packets in the receiver's 4 KiB buffers.
    await Promise.all([client.write(up, 64 * 1024), server.write(down, 64 * 1024)]);
    client.end();
    await t.notThrowsAsync(server.readAll());
    t.is(sha(Buffer.concat(server.received)), sha(up));
    // Half-close: the other direction still flows after the client's SHUTDOWN(SEND).
    const after = pattern(100_000, 3);
    await server.write(after, 64 * 1024);
    server.end();
    const got = await client.readAll();
    t.is(sha(got), sha(Buffer.concat([down, after])));
    t.is(server.windowViolations + client.windowViolations, 0);
    t.is(w.vm(4).drv.packets.filter((p) => p.header.op === VSOCK_OP_RST).length, 0);
    // The client resets: the server sees the RST and both tables are empty.
    w.vm(3).drv.send({ srcPort: 1000, dstPort: 2000, dstCid: 4, op: VSOCK_OP_RST });
    await w.vm(4).drv.until(() => server.reset);
    t.is(w.vm(3).dev.siblingConnections, 0);
    t.is(w.vm(4).dev.siblingConnections, 0);
    t.true(w.vm(3).dev.stats.siblingBytes >= up.length);
    for (const v of w.vms.values()) t.deepEqual(v.logs, []);
  } finally {
    await w.close();
  }
});

/** Sends a REQUEST from `from` to cid:port and expects an RST straight back, counted under `reason`. */
async function refused(t: ExecutionContext, w: World, from: number, port: number, dstCid: number, reason: keyof VsockDevice['stats']['dropped'], type = VSOCK_TYPE_STREAM): Promise<void> {
  const v = w.vm(from);
  const before = v.dev.stats.dropped[reason];
  v.drv.send({ srcPort: port, dstPort: 80, dstCid, op: VSOCK_OP_REQUEST, type });
  const p = await v.drv.next((q) => q.header.dstPort === port);
  t.is(p.header.op, VSOCK_OP_RST, `${from} -> ${dstCid}`);
  t.is(p.header.srcCid, dstCid);
  t.is(p.header.type, type);
  t.is(v.dev.stats.dropped[reason], before + 1, reason);
}

test('isolation: another group, no group, an absent CID, a stopped guest and the own CID get RST at once; nothing reaches the other guest', async (t) => {
  const w = world([
    { cid: 3, groups: ['a'] },
    { cid: 4, groups: ['b'] },
    { cid: 5, groups: [] },
    { cid: 6, groups: ['a'] },
  ]);
  try {
    await refused(t, w, 3, 10, 4, 'unknownDstCid'); // other group
    await refused(t, w, 3, 11, 5, 'unknownDstCid'); // no group
    await refused(t, w, 5, 12, 3, 'unknownDstCid'); // a VM without groups reaches only the host
    await refused(t, w, 3, 13, 99, 'unknownDstCid'); // absent
    await refused(t, w, 3, 14, 3, 'ownCid');
    // A guest whose driver stopped its queues is not reachable.
    await w.vm(6).drv.close();
    await refused(t, w, 3, 15, 6, 'unknownDstCid');
    for (const cid of [4, 5]) {
      await w.vm(cid).drv.sync();
      t.is(w.vm(cid).drv.packets.length, 0, `CID ${cid} got nothing`);
      t.is(w.vm(cid).dev.siblingConnections, 0);
    }
  } finally {
    await w.close();
  }
});

test('a guest that goes away (driver stops, device reset): each sibling connection gets RST at its peer, tables empty', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
    { cid: 7, groups: ['g'] },
  ]);
  try {
    const c1 = await open(w, 3, 100, 4, 200);
    const c2 = await open(w, 7, 101, 4, 201);
    const c3 = await open(w, 3, 102, 7, 202);
    t.is(w.vm(4).dev.siblingConnections, 2);
    w.vm(4).dev.reset(); // the front end went away
    await w.vm(3).drv.until(() => c1.client.reset);
    await w.vm(7).drv.until(() => c2.client.reset);
    t.is(w.vm(3).dev.siblingConnections, 1); // 3 <-> 7 untouched
    t.is(w.vm(4).dev.siblingConnections, 0);
    await c3.client.write(pattern(10_000, 9));
    c3.client.end();
    t.is(sha(await c3.server.readAll()), sha(pattern(10_000, 9)));
  } finally {
    await w.close();
  }
});

test('SEQPACKET between siblings: message boundaries kept, a 10 KiB message split over 4 KiB rx buffers carries EOM/EOR on its last piece only', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  try {
    const { client } = await open(w, 3, 300, 4, 400, VSOCK_TYPE_SEQPACKET);
    const b = w.vm(4).drv;
    const pieces: Array<{ len: number; flags: number; type: number }> = [];
    const bytes: Buffer[] = [];
    b.route(400, 300, (p) => {
      if (p.header.op !== VSOCK_OP_RW) return;
      pieces.push({ len: p.header.len, flags: p.header.flags, type: p.header.type });
      bytes.push(p.payload);
    });
    const msg = pattern(10 * 1024, 4);
    w.vm(3).drv.send({ srcPort: 300, dstPort: 400, dstCid: 4, op: VSOCK_OP_RW, type: VSOCK_TYPE_SEQPACKET, flags: VSOCK_SEQ_EOM | VSOCK_SEQ_EOR }, msg);
    w.vm(3).drv.send({ srcPort: 300, dstPort: 400, dstCid: 4, op: VSOCK_OP_RW, type: VSOCK_TYPE_SEQPACKET, flags: VSOCK_SEQ_EOM }, Buffer.from('small'));
    await b.until(() => pieces.length >= 4);
    t.deepEqual(pieces, [
      { len: 4096, flags: 0, type: VSOCK_TYPE_SEQPACKET },
      { len: 4096, flags: 0, type: VSOCK_TYPE_SEQPACKET },
      { len: 2048, flags: VSOCK_SEQ_EOM | VSOCK_SEQ_EOR, type: VSOCK_TYPE_SEQPACKET },
      { len: 5, flags: VSOCK_SEQ_EOM, type: VSOCK_TYPE_SEQPACKET },
    ]);
    t.is(sha(Buffer.concat(bytes)), sha(Buffer.concat([msg, Buffer.from('small')])));
    t.false(client.reset);
  } finally {
    await w.close();
  }
});

test('SEQPACKET refused: not negotiated by the sender, not negotiated by the sibling, to the host; EOM on a stream and unknown RW flags: RST', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'], seqpacket: false },
    { cid: 5, groups: ['g'] },
  ]);
  try {
    t.false(w.vm(4).dev.seqpacket);
    t.true(w.vm(3).dev.seqpacket);
    await refused(t, w, 4, 20, 3, 'seqpacketNotNegotiated', VSOCK_TYPE_SEQPACKET); // sender did not negotiate
    await refused(t, w, 3, 21, 4, 'seqpacketNotNegotiated', VSOCK_TYPE_SEQPACKET); // receiver did not
    await refused(t, w, 3, 22, 2, 'seqpacketToHost', VSOCK_TYPE_SEQPACKET);
    const { client } = await open(w, 3, 23, 5, 24);
    w.vm(3).drv.send({ srcPort: 23, dstPort: 24, dstCid: 5, op: VSOCK_OP_RW, flags: VSOCK_SEQ_EOM }, Buffer.from('x'));
    await w.vm(3).drv.until(() => client.reset);
    t.is(w.vm(3).dev.stats.dropped.badFlags, 1);
    const s2 = await open(w, 3, 25, 5, 26, VSOCK_TYPE_SEQPACKET);
    w.vm(3).drv.send({ srcPort: 25, dstPort: 26, dstCid: 5, op: VSOCK_OP_RW, type: VSOCK_TYPE_SEQPACKET, flags: 4 }, Buffer.from('x'));
    await w.vm(3).drv.until(() => s2.client.reset);
    await w.vm(5).drv.until(() => s2.server.reset);
    t.is(w.vm(3).dev.stats.dropped.badFlags, 2);
    t.is(w.vm(3).dev.siblingConnections, 0);
  } finally {
    await w.close();
  }
});

test('hostile sibling traffic: data before RESPONSE, data with no connection, a type switch, beyond the peer window: RST (both ends when the link existed), counted', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  const a = (): VsockRawDriver => w.vm(3).drv;
  try {
    // RW with no connection: RST, nothing forwarded.
    a().send({ srcPort: 30, dstPort: 40, dstCid: 4, op: VSOCK_OP_RW }, Buffer.from('hi'));
    t.is((await a().nextOn(30, 40)).header.op, VSOCK_OP_RST);
    t.is(w.vm(3).dev.stats.dropped.unknownConnection, 1);
    // RW before the RESPONSE.
    a().send({ srcPort: 31, dstPort: 41, dstCid: 4, op: VSOCK_OP_REQUEST });
    await w.vm(4).drv.next((p) => p.header.op === VSOCK_OP_REQUEST && p.header.dstPort === 41);
    a().send({ srcPort: 31, dstPort: 41, dstCid: 4, op: VSOCK_OP_RW }, Buffer.from('early'));
    t.is((await a().nextOn(31, 41)).header.op, VSOCK_OP_RST);
    t.is((await w.vm(4).drv.nextOn(41, 31)).header.op, VSOCK_OP_RST);
    t.is(w.vm(3).dev.stats.dropped.protocolViolation, 1);
    // Beyond the window the peer advertised (its buf_alloc 64 KiB, nothing consumed).
    const { client, server } = await open(w, 3, 32, 4, 42);
    a().send({ srcPort: 32, dstPort: 42, dstCid: 4, op: VSOCK_OP_RW }, pattern(60 * 1024, 5));
    a().send({ srcPort: 32, dstPort: 42, dstCid: 4, op: VSOCK_OP_RW }, pattern(8 * 1024, 6));
    await a().until(() => client.reset);
    await w.vm(4).drv.until(() => server.reset);
    t.is(w.vm(3).dev.stats.dropped.creditViolation, 1);
    // Type switch on an open connection.
    const c2 = await open(w, 3, 33, 4, 43);
    a().send({ srcPort: 33, dstPort: 43, dstCid: 4, op: VSOCK_OP_CREDIT_UPDATE, type: VSOCK_TYPE_SEQPACKET });
    await a().until(() => c2.client.reset);
    t.is(w.vm(3).dev.stats.dropped.badType, 1);
    t.is(w.vm(3).dev.siblingConnections, 0);
    t.is(w.vm(4).dev.siblingConnections, 0);
  } finally {
    await w.close();
  }
});

test('a flood of REQUESTs to a sibling that never answers: 256 outstanding, the rest RST (siblingPendingLimit); a connection between other ports still works', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'], drv: { rxBuffers: 128 } },
  ]);
  try {
    const a = w.vm(3).drv;
    for (let i = 0; i < 300; i++) {
      if (a.tx.numFree < 2) await a.until(() => a.tx.numFree >= 2);
      a.send({ srcPort: 5000 + i, dstPort: 77, dstCid: 4, op: VSOCK_OP_REQUEST });
    }
    await w.vm(3).drv.until(() => w.vm(3).dev.stats.dropped.siblingPendingLimit === 44);
    t.is(w.vm(3).dev.siblingConnections, 256);
    t.is(w.vm(3).drv.packets.filter((p) => p.header.op === VSOCK_OP_RST).length, 44);
    // One answer frees one slot.
    w.vm(4).drv.send({ srcPort: 77, dstPort: 5000, dstCid: 3, op: VSOCK_OP_RESPONSE });
    await w.vm(3).drv.next((p) => p.header.op === VSOCK_OP_RESPONSE && p.header.dstPort === 5000);
    const { client, server } = await open(w, 3, 9000, 4, 9001);
    await client.write(Buffer.from('still fine'));
    client.end();
    t.is((await server.readAll()).toString(), 'still fine');
  } finally {
    await w.close();
  }
});

test('a sibling that stops taking rx buffers: its queue fills to 2 MiB, the next packet gets RST on both ends (siblingQueueFull), others unaffected', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  try {
    const conns = [];
    for (let i = 0; i < 12; i++) {
      // The server advertises 256 KiB so that honest credit lets 12 x 256 KiB > 2 MiB through.
      const client = new RawStream(w.vm(3).drv, 600 + i, 700 + i, 64 * 1024, { cid: 4 });
      const server = new RawStream(w.vm(4).drv, 700 + i, -1, 256 * 1024, { cid: 3 });
      const acc = server.accept();
      await client.connect();
      await acc;
      conns.push({ client, server });
    }
    w.vm(4).drv.pauseRx(true);
    // Fill the rx buffers the sibling still has posted, then the queue.
    const writes = conns.map((c) => c.client.write(pattern(256 * 1024, 7), 64 * 1024).catch(() => undefined));
    await w.vm(3).drv.until(() => w.vm(3).dev.stats.dropped.siblingQueueFull > 0);
    t.true(w.vm(4).dev.siblingQueuedBytes <= 2 * 1024 * 1024);
    t.true(w.vm(4).dev.siblingQueuedBytes > 1024 * 1024);
    w.vm(4).drv.pauseRx(false);
    await Promise.all(writes);
    await w.vm(4).drv.until(() => w.vm(4).dev.siblingQueuedBytes === 0);
    await w.vm(3).drv.sync(); // every RST the device queued for CID 3 has arrived
    const reset = conns.filter((c) => c.client.reset);
    t.true(reset.length >= 1);
    await w.vm(4).drv.until(() => reset.every((c) => c.server.reset));
    t.is(w.vm(4).dev.siblingConnections, conns.length - reset.length);
  } finally {
    await w.close();
  }
});

test('shutdown is passed through: SHUTDOWN(SEND) from one side arrives as such, with its credit fields', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  try {
    const { server } = await open(w, 3, 800, 4, 900);
    w.vm(3).drv.send({ srcPort: 800, dstPort: 900, dstCid: 4, op: VSOCK_OP_SHUTDOWN, flags: VSOCK_SHUTDOWN_SEND, bufAlloc: 12345, fwdCnt: 0 });
    await w.vm(4).drv.until(() => server.peerShutdown !== 0);
    t.is(server.peerShutdown, VSOCK_SHUTDOWN_SEND);
    t.is(server.peerBufAlloc, 12345);
    t.is(VSOCK_HEADER_SIZE, 44);
  } finally {
    await w.close();
  }
});

/** Log lines other than those of the raw driver's sync() probe (a CREDIT_REQUEST of no connection). */
function otherThanProbes(logs: string[]): string[] {
  return logs.filter((l) => !l.includes(':2147483632 -> '));
}

test('credit updates between siblings: a receiver that returns credit after every packet (as Linux does) costs the sender an update per half window, never a wait; data intact', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  try {
    // Paced as a stream between two guests runs: each packet is read, and its update sent, before the next.
    const { client, server } = await open(w, 3, 1300, 4, 1400);
    server.creditUpdateEvery = 1;
    const paced = pattern(256 * 1024, 4);
    for (let off = 0; off < paced.length; off += 4096) {
      await client.write(paced.subarray(off, off + 4096), 4096);
      await w.vm(4).drv.until(() => server.rxCnt === off + 4096);
      await w.vm(4).drv.sync(); // its update has been through the device
    }
    t.is(server.creditUpdatesSent, 64);
    // One update each time the sender's view of the window fell below half (32 of 64 KiB): every 9th packet.
    t.true(client.creditUpdatesReceived >= 6 && client.creditUpdatesReceived <= 8, `${client.creditUpdatesReceived} updates received`);
    t.is(client.creditWaits, 0);
    // Each update either passed at once (and was received) or was held.
    let held = w.vm(4).dev.stats.siblingCreditUpdatesHeld;
    t.true(held >= server.creditUpdatesSent - client.creditUpdatesReceived && held <= server.creditUpdatesSent, `${held} held`);
    // At full speed: the sender fills the window before the receiver reads, and data stays intact.
    const up = pattern(1 << 20, 5);
    const sentBefore = server.creditUpdatesSent;
    const receivedBefore = client.creditUpdatesReceived;
    held = w.vm(4).dev.stats.siblingCreditUpdatesHeld;
    await client.write(up, 4096);
    client.end();
    await server.readAll();
    t.is(sha(Buffer.concat(server.received)), sha(Buffer.concat([paced, up])));
    t.true(server.creditUpdatesSent - sentBefore >= 256);
    t.true(w.vm(4).dev.stats.siblingCreditUpdatesHeld > held);
    t.true(client.creditUpdatesReceived - receivedBefore < server.creditUpdatesSent - sentBefore);
    t.is(client.windowViolations + server.windowViolations, 0);
    t.deepEqual(otherThanProbes(w.vm(3).logs), []);
    t.deepEqual(otherThanProbes(w.vm(4).logs), []);
  } finally {
    await w.close();
  }
});

test('credit updates between siblings: a CREDIT_REQUEST gets the held update at once and the answer too; a packet the other way replaces a held update; a slow reader\'s updates all pass', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  try {
    const { client, server } = await open(w, 3, 1500, 4, 1600);
    server.creditUpdateEvery = 1;
    // 16 KiB of a 64 KiB window: the sender still sees three quarters free, so the 4 updates wait.
    await client.write(pattern(16384, 6), 4096);
    await w.vm(4).drv.until(() => server.creditUpdatesSent === 4);
    await w.vm(4).drv.sync(); // the device has handled them
    t.is(w.vm(4).dev.stats.siblingCreditUpdatesHeld, 4);
    t.is(client.creditUpdatesReceived, 0);
    t.is(client.peerFwdCnt, 0);
    // The sender asks: the newest held update comes at once, then the receiver's own answer.
    client.requestCredit();
    await w.vm(3).drv.until(() => client.creditUpdatesReceived === 2);
    t.is(client.peerFwdCnt, 16384);
    t.is(w.vm(4).dev.stats.siblingCreditUpdatesHeld, 4);
    // Held again, then replaced by data the other way, whose header carries the same (newest) credit fields.
    await client.write(pattern(8192, 7), 4096);
    await w.vm(4).drv.until(() => server.creditUpdatesSent === 7);
    await w.vm(4).drv.sync();
    t.is(w.vm(4).dev.stats.siblingCreditUpdatesHeld, 6);
    await server.write(pattern(100, 8));
    await w.vm(3).drv.until(() => client.rxCnt === 100);
    t.is(client.peerFwdCnt, 16384 + 8192);
    t.is(w.vm(4).dev.stats.siblingCreditUpdatesHeld, 6);
    // 40 KiB more takes the sender's view below half: an update goes, and it keeps at least half the window.
    const received = client.creditUpdatesReceived;
    await client.write(pattern(40960, 9), 4096);
    await w.vm(4).drv.until(() => server.rxCnt === 65536);
    await w.vm(3).drv.sync();
    t.true(client.creditUpdatesReceived > received);
    t.true(client.peerBufAlloc - (client.txCnt - client.peerFwdCnt) >= 32768, `${client.peerFwdCnt} seen consumed of ${client.txCnt}`);
    // A reader that holds the data: the window fills and every update passes at once.
    const slow = await open(w, 3, 1700, 4, 1800);
    slow.server.creditUpdateEvery = 1 << 30; // no update until the test says
    await slow.client.write(pattern(49152, 10), 4096); // 48 KiB of 64: a quarter seen free
    await w.vm(4).drv.until(() => slow.server.rxCnt === 49152);
    const held = w.vm(4).dev.stats.siblingCreditUpdatesHeld;
    slow.server.creditUpdateEvery = 1;
    await slow.client.write(pattern(4096, 11), 4096);
    await w.vm(3).drv.until(() => slow.client.peerFwdCnt === 53248);
    t.is(w.vm(4).dev.stats.siblingCreditUpdatesHeld, held);
    t.deepEqual(otherThanProbes(w.vm(3).logs), []);
    t.deepEqual(otherThanProbes(w.vm(4).logs), []);
  } finally {
    await w.close();
  }
});

test('a packet that crossed the RST ending a link is routine: RST back, counted lateAfterClose, not logged', async (t) => {
  const w = world([
    { cid: 3, groups: ['g'] },
    { cid: 4, groups: ['g'] },
  ]);
  try {
    const { server } = await open(w, 3, 1100, 4, 1200);
    w.vm(3).drv.send({ srcPort: 1100, dstPort: 1200, dstCid: 4, op: VSOCK_OP_RST });
    await w.vm(4).drv.until(() => server.reset);
    // CID 4 had sent a credit update before it saw the RST.
    w.vm(4).drv.route(1200, 1100, null); // the answer to it goes to drv.packets
    w.vm(4).drv.send({ srcPort: 1200, dstPort: 1100, dstCid: 3, op: VSOCK_OP_CREDIT_UPDATE });
    const rst = await w.vm(4).drv.next((p) => p.header.op === VSOCK_OP_RST && p.header.dstPort === 1200);
    t.is(rst.header.srcCid, 3);
    t.is(w.vm(4).dev.stats.dropped.lateAfterClose, 1);
    t.is(w.vm(4).dev.stats.dropped.unknownConnection, 0);
    t.deepEqual(w.vm(4).logs, []);
    // A packet of a connection that never was is still hostile.
    w.vm(4).drv.send({ srcPort: 1201, dstPort: 1100, dstCid: 3, op: VSOCK_OP_CREDIT_UPDATE });
    await w.vm(4).drv.next((p) => p.header.op === VSOCK_OP_RST && p.header.dstPort === 1201);
    t.is(w.vm(4).dev.stats.dropped.unknownConnection, 1);
  } finally {
    await w.close();
  }
});
