// Hostile guest input to the vsock device: each case gets the specification's answer
// (RST or drop), is counted under its reason in device.stats, and a witness
// connection opened before keeps working afterwards.
import test from 'ava';
import type { ExecutionContext } from 'ava';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import type { DropReason } from '../drivers/virtio-vsock/device/stats.js';
import {
  VSOCK_HEADER_SIZE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_TYPE_SEQPACKET,
} from '../drivers/virtio-vsock/header.js';
import { VsockRawDriver } from './support/vsock-raw-driver.js';

const GUEST_CID = 5;
const WITNESS_GUEST_PORT = 100;
const WITNESS_HOST_PORT = 200;
const VICTIM_HOST_PORT = 300;

interface Fixture {
  dev: VsockDevice;
  drv: VsockRawDriver;
  logs: string[];
  witness: VsockHostSocket;
  witnessData: Buffer[];
  victims: VsockHostSocket[];
  close(): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const logs: string[] = [];
  const dev = new VsockDevice({ guestCid: GUEST_CID, log: (m) => logs.push(m) });
  const drv = VsockRawDriver.sameThread(dev);
  const witnessData: Buffer[] = [];
  const victims: VsockHostSocket[] = [];
  let witness: VsockHostSocket | null = null;
  const l1 = dev.host.listen(WITNESS_HOST_PORT, (s) => {
    witness = s;
    s.on('data', (c: Buffer) => witnessData.push(c));
    s.on('error', () => {});
  });
  const l2 = dev.host.listen(VICTIM_HOST_PORT, (s) => {
    s.on('error', () => {});
    victims.push(s);
  });
  drv.send({ srcPort: WITNESS_GUEST_PORT, dstPort: WITNESS_HOST_PORT, op: VSOCK_OP_REQUEST });
  await drv.nextOn(WITNESS_GUEST_PORT, WITNESS_HOST_PORT);
  return {
    dev,
    drv,
    logs,
    witness: witness!,
    witnessData,
    victims,
    close: async () => {
      l1.close();
      l2.close();
      await drv.close();
    },
  };
}

/** The witness connection still carries data both ways. */
async function witnessWorks(t: ExecutionContext, f: Fixture, tag: string): Promise<void> {
  const before = Buffer.concat(f.witnessData).length;
  f.drv.send({ srcPort: WITNESS_GUEST_PORT, dstPort: WITNESS_HOST_PORT, op: VSOCK_OP_RW }, Buffer.from(tag));
  f.witness.write(`ack ${tag}`);
  const p = await f.drv.nextOn(WITNESS_GUEST_PORT, WITNESS_HOST_PORT);
  t.is(p.header.op, VSOCK_OP_RW);
  t.is(p.payload.toString(), `ack ${tag}`);
  await f.drv.sync();
  t.is(Buffer.concat(f.witnessData).subarray(before).toString(), tag);
}

/** Opens a victim connection from guestPort. */
async function victim(f: Fixture, guestPort: number): Promise<VsockHostSocket> {
  f.drv.send({ srcPort: guestPort, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST });
  const r = await f.drv.nextOn(guestPort, VICTIM_HOST_PORT);
  if (r.header.op !== VSOCK_OP_RESPONSE) throw new Error(`victim connect got ${r.header.toString()}`);
  return f.victims[f.victims.length - 1]!;
}

function expectCounted(t: ExecutionContext, f: Fixture, reason: DropReason): void {
  t.is(f.dev.stats.dropped[reason], 1, `stats.dropped.${reason}`);
  t.true(f.logs.some((l) => l.includes(reason)), `a log line names ${reason}`);
}

/** After sync, no packet was sent to guestPort. */
async function expectSilence(t: ExecutionContext, f: Fixture, guestPort: number): Promise<void> {
  await f.drv.sync();
  t.deepEqual(
    f.drv.packets.filter((p) => p.header.dstPort === guestPort).map((p) => p.header.toString()),
    [],
  );
}

test('a chain shorter than the 44-byte header is dropped', async (t) => {
  const f = await fixture();
  try {
    f.drv.sendBytes(Buffer.alloc(20, 1), { cuts: [7] });
    f.drv.sendBytes(f.drv.packetBytes({ srcPort: 1, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST }).subarray(0, 43), { cuts: [40] });
    await f.drv.sync();
    t.is(f.dev.stats.dropped.shortChain, 2);
    t.is(f.dev.connections, 1);
    await witnessWorks(t, f, 'after short chains');
  } finally {
    await f.close();
  }
});

test('len larger than the chain: RST, and the connection is reset', async (t) => {
  const f = await fixture();
  try {
    const v = await victim(f, 700);
    const err = new Promise<NodeJS.ErrnoException>((resolve) => v.once('error', resolve));
    const bytes = f.drv.packetBytes({ srcPort: 700, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_RW, len: 5000 }, Buffer.alloc(100, 9));
    f.drv.sendBytes(bytes, { cuts: [13, 31, 50] }); // header split oddly too
    const rst = await f.drv.nextOn(700, VICTIM_HOST_PORT);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is((await err).code, 'ECONNRESET');
    expectCounted(t, f, 'lengthMismatch');
    await witnessWorks(t, f, 'after length mismatch');
  } finally {
    await f.close();
  }
});

test('reserved CID bits: dropped without answer', async (t) => {
  const f = await fixture();
  try {
    const b = f.drv.packetBytes({ srcPort: 701, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST });
    b.writeUInt32LE(1, 4); // src_cid upper half
    f.drv.sendBytes(b);
    const c = f.drv.packetBytes({ srcPort: 702, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST });
    c.writeUInt32LE(0x80000000, 12); // dst_cid upper half
    f.drv.sendBytes(c);
    await expectSilence(t, f, 701);
    await expectSilence(t, f, 702);
    t.is(f.dev.stats.dropped.reservedCidBits, 2);
    t.is(f.dev.connections, 1);
    await witnessWorks(t, f, 'after reserved bits');
  } finally {
    await f.close();
  }
});

test('a wrong src_cid is dropped; a dst_cid other than the host gets RST', async (t) => {
  const f = await fixture();
  try {
    f.drv.send({ srcCid: GUEST_CID + 1, srcPort: 703, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST });
    await expectSilence(t, f, 703);
    expectCounted(t, f, 'wrongSrcCid');
    f.drv.send({ dstCid: 77, srcPort: 704, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST });
    const rst = await f.drv.next((p) => p.header.dstPort === 704);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(rst.header.srcCid, 77);
    expectCounted(t, f, 'unknownDstCid');
    await witnessWorks(t, f, 'after bad CIDs');
  } finally {
    await f.close();
  }
});

test('unknown op: RST, the connection is reset', async (t) => {
  const f = await fixture();
  try {
    await victim(f, 705);
    f.drv.send({ srcPort: 705, dstPort: VICTIM_HOST_PORT, op: 42 });
    t.is((await f.drv.nextOn(705, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    expectCounted(t, f, 'badOp');
    f.drv.send({ srcPort: 706, dstPort: VICTIM_HOST_PORT, op: 0 });
    t.is((await f.drv.nextOn(706, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    t.is(f.dev.connections, 1);
    await witnessWorks(t, f, 'after unknown op');
  } finally {
    await f.close();
  }
});

test('unknown type, SEQPACKET not negotiated: RST (of the packet\'s type when it is a known one)', async (t) => {
  const f = await fixture();
  try {
    f.drv.send({ srcPort: 707, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST, type: VSOCK_TYPE_SEQPACKET });
    const rst = await f.drv.nextOn(707, VICTIM_HOST_PORT);
    t.is(rst.header.op, VSOCK_OP_RST);
    t.is(rst.header.type, VSOCK_TYPE_SEQPACKET); // Linux ignores an RST whose type is not its socket's
    t.is(f.dev.stats.dropped.seqpacketNotNegotiated, 1);
    f.drv.send({ srcPort: 708, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST, type: 99 });
    t.is((await f.drv.nextOn(708, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    t.is(f.dev.stats.dropped.badType, 1);
    t.is(f.dev.connections, 1);
    await witnessWorks(t, f, 'after bad type');
  } finally {
    await f.close();
  }
});

test('len on a control op, unknown SHUTDOWN flags: RST', async (t) => {
  const f = await fixture();
  try {
    await victim(f, 709);
    f.drv.send({ srcPort: 709, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_SHUTDOWN, flags: 8 });
    t.is((await f.drv.nextOn(709, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    f.drv.send({ srcPort: 710, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST, len: 10 }, Buffer.alloc(10));
    t.is((await f.drv.nextOn(710, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    t.is(f.dev.stats.dropped.badHeader, 2);
    await witnessWorks(t, f, 'after bad header');
  } finally {
    await f.close();
  }
});

test('packets for a connection that does not exist get RST; RST is never answered', async (t) => {
  const f = await fixture();
  try {
    f.drv.send({ srcPort: 711, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_RW }, Buffer.from('who?'));
    t.is((await f.drv.nextOn(711, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    expectCounted(t, f, 'unknownConnection');
    f.drv.send({ srcPort: 712, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_RST });
    await expectSilence(t, f, 712);
    t.is(f.dev.stats.dropped.rstUnknownIgnored, 1); // counted, not logged (routine after a close)
    // Also a RST with garbage the device would otherwise refuse: still no answer.
    f.drv.send({ srcPort: 713, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_RST, type: 99 });
    await expectSilence(t, f, 713);
    await witnessWorks(t, f, 'after unknown connection');
  } finally {
    await f.close();
  }
});

test('credit violation (more than the buf_alloc we advertised): RST', async (t) => {
  const f = await fixture();
  try {
    const v = await victim(f, 714); // nobody reads v: its bytes stay buffered
    const err = new Promise<NodeJS.ErrnoException>((resolve) => v.once('error', resolve));
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let i = 0; i < 4; i++) f.drv.send({ srcPort: 714, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_RW }, chunk);
    await f.drv.sync();
    t.is(f.dev.stats.dropped.creditViolation, 0); // exactly the window: fine
    f.drv.send({ srcPort: 714, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_RW }, Buffer.alloc(1));
    t.is((await f.drv.nextOn(714, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    t.is((await err).code, 'ECONNRESET');
    expectCounted(t, f, 'creditViolation');
    await witnessWorks(t, f, 'after credit violation');
  } finally {
    await f.close();
  }
});

test('ops not allowed in the state: data before RESPONSE, REQUEST on an open connection', async (t) => {
  const f = await fixture();
  try {
    const pending = f.dev.host.connect(715);
    const req = await f.drv.next((p) => p.header.op === VSOCK_OP_REQUEST && p.header.dstPort === 715);
    f.drv.send({ srcPort: 715, dstPort: req.header.srcPort, op: VSOCK_OP_RW }, Buffer.from('too early'));
    await t.throwsAsync(pending, { code: 'ECONNREFUSED' });
    t.is((await f.drv.nextOn(715, req.header.srcPort)).header.op, VSOCK_OP_RST);
    await victim(f, 716);
    f.drv.send({ srcPort: 716, dstPort: VICTIM_HOST_PORT, op: VSOCK_OP_REQUEST });
    t.is((await f.drv.nextOn(716, VICTIM_HOST_PORT)).header.op, VSOCK_OP_RST);
    t.is(f.dev.stats.dropped.protocolViolation, 2);
    await witnessWorks(t, f, 'after protocol violations');
  } finally {
    await f.close();
  }
});

test('descriptors outside guest memory: the chain is refused by the queue and counted', async (t) => {
  const f = await fixture();
  try {
    f.drv.tx.add([], [[0x10, 64]]); // guest memory starts at 0x40000000
    f.drv.txInFlight++;
    f.drv.flushTx();
    await f.drv.sync();
    t.is(f.dev.stats.dropped.queueError, 1);
    await witnessWorks(t, f, 'after a bad descriptor');
  } finally {
    await f.close();
  }
});

test('REQUESTs beyond maxConnections get RST; a freed slot can be used again', async (t) => {
  const dev = new VsockDevice({ guestCid: GUEST_CID, maxConnections: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  const sockets: VsockHostSocket[] = [];
  const l = dev.host.listen(400, (s) => {
    s.on('error', () => {});
    sockets.push(s);
  });
  try {
    for (let i = 0; i < 4; i++) drv.send({ srcPort: 800 + i, dstPort: 400, op: VSOCK_OP_REQUEST });
    const ops = [];
    for (let i = 0; i < 4; i++) ops.push((await drv.nextOn(800 + i, 400)).header.op);
    t.deepEqual(ops, [VSOCK_OP_RESPONSE, VSOCK_OP_RESPONSE, VSOCK_OP_RESPONSE, VSOCK_OP_RST]);
    t.is(dev.stats.dropped.tooManyConnections, 1);
    sockets[0]!.destroy();
    t.is((await drv.nextOn(800, 400)).header.op, VSOCK_OP_RST);
    drv.send({ srcPort: 804, dstPort: 400, op: VSOCK_OP_REQUEST });
    t.is((await drv.nextOn(804, 400)).header.op, VSOCK_OP_RESPONSE);
  } finally {
    l.close();
    await drv.close();
  }
});

test('a listener that throws does not break kick()', async (t) => {
  const f = await fixture();
  const l = f.dev.host.listen(400, (s) => {
    s.on('error', () => {});
    throw new Error('listener bug');
  });
  try {
    f.drv.send({ srcPort: 717, dstPort: 400, op: VSOCK_OP_REQUEST });
    t.is((await f.drv.nextOn(717, 400)).header.op, VSOCK_OP_RESPONSE);
    t.is(f.dev.stats.dropped.internalError, 1);
    await witnessWorks(t, f, 'after listener bug');
  } finally {
    l.close();
    await f.close();
  }
});

test('an rx buffer too short for a header is returned unused, the next one is filled', async (t) => {
  const dev = new VsockDevice({ guestCid: GUEST_CID });
  const drv = VsockRawDriver.sameThread(dev, { rxBuffers: 0 });
  const l = dev.host.listen(400, (s) => s.on('error', () => {}));
  try {
    drv.postRxRaw([10]);
    drv.postRxRaw([20, 20]);
    drv.postRxRaw([VSOCK_HEADER_SIZE + 100]);
    drv.send({ srcPort: 718, dstPort: 400, op: VSOCK_OP_REQUEST });
    await drv.until(() => drv.packets.length === 3);
    t.deepEqual(drv.packets.map((p) => p.usedLength), [0, 0, VSOCK_HEADER_SIZE]);
    t.is(drv.packets[2]!.header.op, VSOCK_OP_RESPONSE);
    t.is(dev.stats.dropped.rxBufferTooShort, 2);
  } finally {
    l.close();
    await drv.close();
  }
});
