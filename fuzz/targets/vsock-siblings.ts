// Sibling routing in the vsock device (sibling-router.ts, sibling-links.ts,
// sibling-queue.ts) under two hostile guests: devices of CIDs 3 and 4 share a group,
// CID 5 is in another; the input is a sequence of packets from CID 3 or 4 (any op,
// type, flags, CIDs among the siblings, the host, the outsider, the own CID and an
// absent one, credit fields, payloads up to 1500 bytes), with either guest sometimes
// starving its device of rx buffers.
//
// Invariants: the devices count no internal error; every tx chain comes back used; the
// outsider (CID 5) receives nothing; every packet a guest receives is addressed to it,
// comes from the host or its sibling, has a known type and op and len = the payload
// written; both devices hold the same number of links (one record, two keys); the
// queue towards a guest never passes its 2 MiB and empties once the guest takes rx
// buffers; and afterwards a fresh connection between the siblings carries data.
import type { VsockMuxer } from '../../drivers/virtio-vsock/device/muxer.js';
import { SiblingRouter } from '../../drivers/virtio-vsock/device/sibling-router.js';
import { VsockDevice } from '../../drivers/virtio-vsock/device/vsock-device.js';
import { VSOCK_CID_HOST, VSOCK_HEADER_SIZE, VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RW, VSOCK_TYPE_SEQPACKET, VSOCK_TYPE_STREAM, VsockHeader, encodeHeader } from '../../drivers/virtio-vsock/header.js';
import { VsockRawDriver, type RawPacket } from '../../tests/support/vsock-raw-driver.js';
import { ByteReader } from '../engine/byte-reader.js';
import { check, type FuzzTarget } from '../engine/target.js';
import { until } from './vsock-device.js';

const A = 3;
const B = 4;
const OUTSIDER = 5;
const MAX_PACKETS = 32;
const QUEUE_MAX_BYTES = 2 * 1024 * 1024;

function checkRx(cid: number, { header: h, usedLength }: RawPacket): void {
  if (usedLength === 0) return;
  check(usedLength >= VSOCK_HEADER_SIZE, () => `CID ${cid}: rx packet of ${usedLength} bytes`);
  check(h.dstCid === cid, () => `CID ${cid} got ${h}: not addressed to it`);
  check(h.srcCid === VSOCK_CID_HOST || h.srcCid === (cid === A ? B : A) || h.op === 3, () => `CID ${cid} got ${h}: from neither the host nor its sibling`);
  check((h.type === VSOCK_TYPE_STREAM || h.type === VSOCK_TYPE_SEQPACKET) && h.op >= 1 && h.op <= 7, () => `CID ${cid} got ${h}: type or op`);
  check(h.len === usedLength - VSOCK_HEADER_SIZE, () => `CID ${cid} got ${h}: len but ${usedLength - VSOCK_HEADER_SIZE} payload bytes written`);
}

function packet(r: ByteReader, from: number): Uint8Array {
  const sel = r.u8();
  const op = sel & 0x80 ? r.u8() % 9 : 1 + (r.u8() % 7);
  const payload = op === 5 || sel & 0x40 ? new Uint8Array(r.u16() % 1500).fill(0x41 + (sel % 26)) : new Uint8Array(0);
  const h = new VsockHeader();
  h.srcCid = from;
  h.dstCid = sel & 1 ? r.pick([VSOCK_CID_HOST, OUTSIDER, from, 99]) : from === A ? B : A;
  h.srcPort = 1 + (r.u8() % 3);
  h.dstPort = 1 + (r.u8() % 3);
  h.op = op;
  h.type = sel & 2 ? r.pick([VSOCK_TYPE_SEQPACKET, VSOCK_TYPE_STREAM, 0, 7]) : VSOCK_TYPE_STREAM;
  h.flags = sel & 4 ? r.u8() % 8 : 0;
  h.len = payload.length;
  h.bufAlloc = sel & 8 ? r.u32() : 64 * 1024;
  h.fwdCnt = sel & 16 ? r.u32() : 0;
  const b = new Uint8Array(VSOCK_HEADER_SIZE + payload.length);
  encodeHeader(h, new DataView(b.buffer), 0);
  b.set(payload, VSOCK_HEADER_SIZE);
  return b;
}

async function run(input: Uint8Array): Promise<void> {
  const r = new ByteReader(input);
  const router = new SiblingRouter<VsockMuxer>();
  const devices = [A, B, OUTSIDER].map((cid) => new VsockDevice({ guestCid: cid, router, groups: [cid === OUTSIDER ? 'other' : 'g'] }));
  const [da, db] = devices as [VsockDevice, VsockDevice, VsockDevice];
  const drivers = devices.map((d) => VsockRawDriver.sameThread(d, { memoryBytes: 4 << 20, rxBuffers: 32, queueSize: 64, seqpacket: true }));
  const [ga, gb, gc] = drivers as [VsockRawDriver, VsockRawDriver, VsockRawDriver];
  let sent = 0;
  const checked = [0, 0];
  const checkAll = (): boolean => {
    [ga, gb].forEach((g, i) => {
      for (; checked[i]! < g.packets.length; checked[i]!++) checkRx(i === 0 ? A : B, g.packets[checked[i]!]!);
    });
    check(gc.packets.length === 0, () => `the outsider got ${gc.packets[0]?.header}`);
    check(da.siblingConnections === db.siblingConnections, () => `links: CID 3 holds ${da.siblingConnections}, CID 4 ${db.siblingConnections}`);
    check(da.siblingQueuedBytes <= QUEUE_MAX_BYTES && db.siblingQueuedBytes <= QUEUE_MAX_BYTES, () => 'a sibling queue passed its bound');
    for (const d of devices) check(d.stats.dropped.internalError === 0, () => `CID ${d.guestCid}: ${d.stats.dropped.internalError} internal errors`);
    return true;
  };
  try {
    for (let i = 0; i < MAX_PACKETS && !r.exhausted; i++) {
      const action = r.u8() % 12;
      const g = action & 1 ? gb : ga;
      if (action < 2) g.pauseRx(true);
      else if (action < 4) g.pauseRx(false);
      else if (action === 4) await new Promise((res) => setImmediate(res));
      else if (g.tx.numFree >= 1) {
        g.sendBytes(packet(r, g === ga ? A : B));
        sent++;
      }
      checkAll();
    }
    ga.pauseRx(false);
    gb.pauseRx(false);
    await until(() => checkAll() && ga.txInFlight === 0 && gb.txInFlight === 0, 'tx chains not returned used');
    check(da.stats.txPackets + db.stats.txPackets === sent, () => `stats.txPackets ${da.stats.txPackets + db.stats.txPackets}, sent ${sent}`);
    await until(() => checkAll() && da.siblingQueuedBytes === 0 && db.siblingQueuedBytes === 0, 'the sibling queues did not empty with rx buffers given');
    // A fresh connection between the siblings (ports no input uses) carries data.
    ga.send({ srcPort: 700, dstPort: 800, dstCid: B, op: VSOCK_OP_REQUEST });
    await until(() => checkAll() && gb.packets.some((p) => p.header.op === VSOCK_OP_REQUEST && p.header.dstPort === 800), 'the witness REQUEST did not reach CID 4');
    gb.send({ srcPort: 800, dstPort: 700, dstCid: A, op: VSOCK_OP_RESPONSE });
    await until(() => checkAll() && ga.packets.some((p) => p.header.op === VSOCK_OP_RESPONSE && p.header.dstPort === 700), 'the witness RESPONSE did not reach CID 3');
    ga.send({ srcPort: 700, dstPort: 800, dstCid: B, op: VSOCK_OP_RW }, Buffer.from('witness'));
    await until(() => checkAll() && gb.packets.some((p) => p.header.op === VSOCK_OP_RW && p.header.dstPort === 800 && p.payload.toString() === 'witness'), 'the witness data did not reach CID 4');
  } finally {
    for (const g of drivers) await g.close();
    for (const d of devices) d.dispose();
  }
}

export const vsockSiblingsTarget: FuzzTarget = {
  name: 'vsock-siblings',
  description: 'sibling routing between two guests of one daemon (and an outsider): packet sequences from two hostile guests, stream and SEQPACKET',
  focus: ['drivers/virtio-vsock/device/muxer.ts', 'drivers/virtio-vsock/device/sibling-router.ts', 'drivers/virtio-vsock/device/sibling-links.ts', 'drivers/virtio-vsock/device/sibling-queue.ts'],
  maxInputBytes: 1024,
  hangSeconds: 30,
  seeds() {
    // 3 -> 4: REQUEST, then 4 -> 3: RESPONSE, 3 -> 4: RW 100 bytes, SHUTDOWN, RST; then SEQPACKET.
    const conv = (type: number): number[] => [
      6, 0, 1, 1, 1, /* REQUEST */ 7, 0, 2, 1, 1, /* RESPONSE from B */ 6, 0x40, 5, 1, 1, 100, 0, /* RW */ 6, 0, 4, 1, 1, /* SHUTDOWN */ 6, 0, 3, 1, 1, /* RST */ 6, type === 2 ? 2 : 0, 1, 2, 2, 0,
    ];
    return [new Uint8Array(conv(1)), new Uint8Array(conv(2)), new Uint8Array([0, 6, 0x40, 5, 1, 1, 200, 5, 4, 6, 1, 1, 1, 1, 2])];
  },
  run,
};
