// The virtio-vsock device emulator (drivers/virtio-vsock/device, virtio 1.2 5.10) under
// a hostile guest, on either ring layout: the input picks split or packed rings, then a
// sequence of guest packets (any op, type, CIDs, ports, flags, len, credit fields),
// each cut into descriptors as the input says (several, indirect, truncated), with the
// guest sometimes starving the device of rx buffers or posting odd ones. Host listeners
// on ports 10-12 echo or end. A witness connection opened first must survive it all.
//
// Invariants: no exception reaches the driver's notify, the device counts no internal
// error; every tx chain comes back used and is counted in stats.txPackets; every packet
// the device writes into an rx buffer is a well-formed host-to-guest packet (src CID 2,
// dst CID 3, STREAM, a known op, len = the payload it wrote, no payload unless RW); and
// the witness connection carries data both ways afterwards.
import { VsockDevice } from '../../drivers/virtio-vsock/device/vsock-device.js';
import type { VsockHostSocket } from '../../drivers/virtio-vsock/device/host-socket.js';
import { VSOCK_CID_HOST, VSOCK_HEADER_SIZE, VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_OP_RW, VSOCK_TYPE_SEQPACKET, VSOCK_TYPE_STREAM, VsockHeader, encodeHeader } from '../../drivers/virtio-vsock/header.js';
import { VsockRawDriver, type RawPacket } from '../../tests/support/vsock-raw-driver.js';
import { ByteReader } from '../engine/byte-reader.js';
import { InvariantError, check, type FuzzTarget } from '../engine/target.js';

const GUEST_CID = 3;
const WITNESS_GUEST_PORT = 9999;
const WITNESS_HOST_PORT = 99;
const MAX_PACKETS = 24;
const TURNS = 2000;

/** Waits (a bounded number of event-loop turns) until pred() holds (vsock-siblings.ts too). */
export async function until(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < TURNS; i++) {
    if (pred()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new InvariantError(`${what}: not within ${TURNS} event-loop turns`);
}

function checkRxPacket({ header: h, usedLength }: RawPacket): void {
  if (usedLength === 0) return; // an rx buffer returned unused (too short for a header)
  check(usedLength >= VSOCK_HEADER_SIZE, () => `rx packet of ${usedLength} bytes, shorter than a header`);
  // An RST answering a packet addressed elsewhere comes from the CID it was addressed to (5.10.6.4).
  check((h.srcCid === VSOCK_CID_HOST || h.op === VSOCK_OP_RST) && h.dstCid === GUEST_CID, () => `rx packet ${h}: wrong CIDs`);
  // An RST answering a SEQPACKET packet has that type (Linux ignores an RST of another type than its socket's).
  check((h.type === VSOCK_TYPE_STREAM || (h.type === VSOCK_TYPE_SEQPACKET && h.op === VSOCK_OP_RST)) && h.op >= VSOCK_OP_REQUEST && h.op <= 7, () => `rx packet ${h}: type or op`);
  check(h.len === usedLength - VSOCK_HEADER_SIZE, () => `rx packet ${h}: len ${h.len} but ${usedLength - VSOCK_HEADER_SIZE} payload bytes written`);
  check(h.op === VSOCK_OP_RW || h.len === 0, () => `rx packet ${h}: payload on a non-RW packet`);
}

function headerBytes(f: Partial<VsockHeader> & { srcPort: number; dstPort: number; op: number }, payload: Uint8Array, lenOverride?: number): Uint8Array {
  const h = new VsockHeader();
  h.srcCid = f.srcCid ?? GUEST_CID;
  h.dstCid = f.dstCid ?? VSOCK_CID_HOST;
  h.srcPort = f.srcPort;
  h.dstPort = f.dstPort;
  h.op = f.op;
  h.type = f.type ?? VSOCK_TYPE_STREAM;
  h.len = lenOverride ?? (f.op === VSOCK_OP_RW ? payload.length : 0);
  h.flags = f.flags ?? 0;
  h.bufAlloc = f.bufAlloc ?? 1 << 20;
  h.fwdCnt = f.fwdCnt ?? 0;
  const b = new Uint8Array(VSOCK_HEADER_SIZE + payload.length);
  encodeHeader(h, new DataView(b.buffer), 0);
  b.set(payload, VSOCK_HEADER_SIZE);
  return b;
}

/** One packet from the input: mostly plausible fields, sometimes anything. */
function packetFrom(r: ByteReader): { bytes: Uint8Array; cuts: number[]; indirect: boolean } {
  const sel = r.u8();
  const payload = new Uint8Array(r.u16() % 1500).fill(0x61 + (sel % 26));
  const op = sel & 0x80 ? r.u8() % 10 : 1 + (r.u8() % 7);
  const f = {
    srcCid: sel & 1 ? r.pick([0, 1, 2, 4, 0xffffffff, GUEST_CID]) : GUEST_CID,
    dstCid: sel & 2 ? r.pick([0, 1, 3, 0xffffffff, VSOCK_CID_HOST]) : VSOCK_CID_HOST,
    srcPort: 1 + (r.u8() % 4),
    dstPort: r.pick([10, 11, 12, 13, WITNESS_HOST_PORT, 0xffffffff]),
    op,
    type: sel & 4 ? r.u8() % 4 : VSOCK_TYPE_STREAM,
    flags: sel & 8 ? r.u8() % 8 : 0,
    bufAlloc: sel & 16 ? r.u32() : 64 * 1024,
    fwdCnt: sel & 32 ? r.u32() : 0,
  };
  const lenDelta = sel & 64 ? (r.u8() << 24) >> 24 : 0;
  let bytes = headerBytes(f, op === VSOCK_OP_RW || lenDelta !== 0 ? payload : new Uint8Array(0), lenDelta !== 0 ? Math.max(0, (op === VSOCK_OP_RW ? payload.length : 0) + lenDelta) : undefined);
  const shape = r.u8();
  if (shape & 1) bytes = bytes.subarray(0, r.u8() % (bytes.length + 1));
  const cuts = shape & 2 ? Array.from({ length: 1 + (r.u8() % 4) }, () => 1 + r.u8() % 60) : [];
  return { bytes, cuts, indirect: (shape & 4) !== 0 };
}

async function run(input: Uint8Array): Promise<void> {
  const r = new ByteReader(input);
  const cfg = r.u8();
  const device = new VsockDevice({ guestCid: GUEST_CID, maxConnections: 4 });
  const handles = [10, 11, 12].map((port) =>
    device.host.listen(port, (s: VsockHostSocket) => {
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        if (port !== 12) s.write(d.subarray(0, 200));
      });
      s.on('end', () => s.end());
      if (port === 11) s.end('bye');
    }),
  );
  let witness: VsockHostSocket | null = null;
  let witnessGot = '';
  handles.push(
    device.host.listen(WITNESS_HOST_PORT, (s) => {
      s.on('error', () => {});
      if (witness !== null) return; // a fuzz packet's connection to the same port
      witness = s;
      s.setEncoding('latin1');
      s.on('data', (d: string) => (witnessGot += d));
    }),
  );
  const g = VsockRawDriver.sameThread(device, { memoryBytes: 2 << 20, rxBuffers: 32, queueSize: 64, packed: (cfg & 1) !== 0 });
  let sent = 0;
  let checked = 0;
  const send = (bytes: Uint8Array, cuts: number[], indirect: boolean): void => {
    if (g.tx.numFree < (indirect ? 1 : cuts.length + 1)) return; // the ring is full: not sent
    g.sendBytes(bytes, { cuts, indirect });
    sent++;
  };
  const checkReceived = (): boolean => {
    for (; checked < g.packets.length; checked++) checkRxPacket(g.packets[checked]!);
    return true;
  };
  try {
    send(headerBytes({ srcPort: WITNESS_GUEST_PORT, dstPort: WITNESS_HOST_PORT, op: VSOCK_OP_REQUEST }, new Uint8Array(0)), [], false);
    await until(() => checkReceived() && g.packets.some((p) => p.header.op === VSOCK_OP_RESPONSE && p.header.dstPort === WITNESS_GUEST_PORT), 'the witness connection was not accepted');
    for (let i = 0; i < MAX_PACKETS && !r.exhausted; i++) {
      const action = r.u8() % 16;
      if (action === 0) g.pauseRx(true);
      else if (action === 1) g.pauseRx(false);
      else if (action === 2 && g.rx.numFree >= 2) g.postRxRaw([r.u8() % 64, r.u8()]);
      else if (action === 3) await new Promise((res) => setImmediate(res));
      else {
        const p = packetFrom(r);
        send(p.bytes, p.cuts, p.indirect);
      }
    }
    g.pauseRx(false);
    await until(() => checkReceived() && g.txInFlight === 0, `tx chains not returned used (${g.txInFlight} of ${sent} outstanding)`);
    check(device.stats.txPackets === sent, () => `stats.txPackets ${device.stats.txPackets}, tx chains sent ${sent}`);
    check(device.stats.dropped.internalError === 0, () => `the device counted ${device.stats.dropped.internalError} internal errors`);
    // The witness carries data both ways.
    const tag = 'witness';
    witness!.write(tag);
    send(headerBytes({ srcPort: WITNESS_GUEST_PORT, dstPort: WITNESS_HOST_PORT, op: VSOCK_OP_RW }, Buffer.from(tag)), [], false);
    await until(() => witnessGot === tag, `the witness connection did not carry guest data (host got ${JSON.stringify(witnessGot)})`);
    await until(() => checkReceived() && g.packets.some((p) => p.header.op === VSOCK_OP_RW && p.header.dstPort === WITNESS_GUEST_PORT && p.payload.toString('latin1') === tag), 'the witness connection did not carry host data');
    check(device.stats.dropped.internalError === 0, () => `the device counted ${device.stats.dropped.internalError} internal errors`);
  } finally {
    for (const h of handles) h.close();
    await g.close();
  }
}

export const vsockDeviceTarget: FuzzTarget = {
  name: 'vsock-device',
  description: 'the virtio-vsock device emulator: packet sequences from a hostile guest, split and packed rings (5.10)',
  focus: ['drivers/virtio-vsock/device/vsock-device.ts', 'drivers/virtio-vsock/device/muxer.ts', 'drivers/virtio-vsock/device/connection.ts', 'drivers/virtio-vsock/device/pending-rx.ts', 'drivers/virtio-vsock/header.ts'],
  maxInputBytes: 1024,
  hangSeconds: 30,
  seeds() {
    // REQUEST to 10, RW with data, SHUTDOWN, RST; then the same packed.
    const conv = [3, 0, 0, 0, 1, 0, 0, 0, /**/ 3, 0, 50, 0, 4, 0, 0, 0, /**/ 3, 0, 0, 0, 3, 0, 0, 0, /**/ 3, 0, 0, 0, 2, 0, 0, 0];
    return [new Uint8Array([0, ...conv]), new Uint8Array([1, ...conv]), new Uint8Array([1, 0, 5, 0x80, 0, 0, 9, 1, 0, 3, 0x41, 10, 0, 0, 6, 3, 7, 20, 5, 6])];
  },
  run,
};
