// Property test: random guest packet sequences (any op, type, CID, ports, flags, len,
// credit numbers, descriptor shape) never make the device throw or hit an internal
// error, and a witness connection opened first keeps carrying data both ways.
import test from 'ava';
import fc from 'fast-check';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import { VSOCK_OP_REQUEST, VSOCK_OP_RW } from '../drivers/virtio-vsock/header.js';
import { VsockRawDriver, type PacketFields, type TxShape } from './support/vsock-raw-driver.js';

const GUEST_CID = 3;
const WITNESS_GUEST_PORT = 9999;
const WITNESS_HOST_PORT = 99;

const packetArb = fc.record({
  srcCid: fc.oneof(fc.constant(GUEST_CID), fc.constant(GUEST_CID), fc.integer({ min: 0, max: 10 })),
  dstCid: fc.oneof(fc.constant(2), fc.constant(2), fc.integer({ min: 0, max: 10 })),
  srcPort: fc.integer({ min: 1, max: 4 }),
  dstPort: fc.constantFrom(10, 11, 12, 13),
  op: fc.oneof(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 0, max: 9 })),
  type: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 3 })),
  flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 7 })),
  bufAlloc: fc.oneof(fc.constant(64 * 1024), fc.integer({ min: 0, max: 0xffffffff })),
  fwdCnt: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
  payload: fc.integer({ min: 0, max: 3000 }),
  lenDelta: fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: -50, max: 50 })),
  cuts: fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 5 }),
  indirect: fc.boolean(),
  truncate: fc.oneof(fc.constant(-1), fc.constant(-1), fc.integer({ min: 0, max: 43 })),
});

type Pkt = typeof packetArb extends fc.Arbitrary<infer T> ? T : never;

test('random packet sequences: no internal error, the witness connection keeps working', async (t) => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(packetArb, { minLength: 1, maxLength: 25 }), fc.boolean(), async (packets: Pkt[], hostWrites: boolean) => {
      run++;
      const dev = new VsockDevice({ guestCid: GUEST_CID });
      const drv = VsockRawDriver.sameThread(dev, { memoryBytes: 4 << 20, rxBuffers: 32 });
      const handles = [10, 11, 12].map((port) =>
        dev.host.listen(port, (s: VsockHostSocket) => {
          s.on('error', () => {});
          s.on('data', (d: Buffer) => {
            if (hostWrites) s.write(d.subarray(0, 100));
          });
          s.on('end', () => s.end());
        }),
      );
      let witness: VsockHostSocket | null = null;
      let witnessGot = '';
      const wh = dev.host.listen(WITNESS_HOST_PORT, (s) => {
        witness = s;
        s.on('error', () => {});
        s.setEncoding('latin1');
        s.on('data', (d: string) => (witnessGot += d));
      });
      try {
        drv.send({ srcPort: WITNESS_GUEST_PORT, dstPort: WITNESS_HOST_PORT, op: VSOCK_OP_REQUEST, bufAlloc: 1 << 20 });
        await drv.nextOn(WITNESS_GUEST_PORT, WITNESS_HOST_PORT);
        for (const p of packets) {
          const f: PacketFields = { ...p, len: p.op === VSOCK_OP_RW ? Math.max(0, p.payload + p.lenDelta) : p.lenDelta === 0 ? 0 : Math.abs(p.lenDelta) };
          let bytes = drv.packetBytes(f, Buffer.alloc(p.payload, run & 0xff));
          if (p.truncate >= 0) bytes = bytes.subarray(0, p.truncate);
          const shape: TxShape = { cuts: p.cuts, indirect: p.indirect };
          if (drv.tx.numFree < 8) await drv.until(() => drv.tx.numFree >= 8);
          drv.sendBytes(bytes, shape);
        }
        await drv.sync();
        t.is(dev.stats.dropped.internalError, 0);
        const tag = `witness ${run}`;
        drv.send({ srcPort: WITNESS_GUEST_PORT, dstPort: WITNESS_HOST_PORT, op: VSOCK_OP_RW, bufAlloc: 1 << 20 }, Buffer.from(tag));
        witness!.write(tag);
        const back = await drv.next((x) => x.header.dstPort === WITNESS_GUEST_PORT && x.header.op === VSOCK_OP_RW);
        t.is(back.payload.toString(), tag);
        await drv.sync();
        t.is(witnessGot, tag);
        return dev.stats.dropped.internalError === 0;
      } finally {
        for (const h of handles) h.close();
        wh.close();
        await drv.close();
      }
    }),
    { numRuns: 60 },
  );
});
