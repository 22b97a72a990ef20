// Hostile device input: random packets (any op, type, flags, lengths, CIDs, credit
// values) thrown at the driver next to one live connection. The driver must not throw
// or mark itself broken, must never answer an RST with an RST, and the witness
// connection must keep working.
import test from 'ava';
import fc from 'fast-check';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_OP_RW } from '../drivers/virtio-vsock/header.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';
import { ScriptedVsockPeer } from './support/vsock-scripted-peer.js';

const GUEST_CID = 3;
const WITNESS_PORT = 777;

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

const packet = fc.record({
  op: fc.integer({ min: 0, max: 9 }),
  type: fc.integer({ min: 0, max: 3 }),
  srcCid: fc.constantFrom(2, 2, 2, 5, 0xffffffff),
  dstCid: fc.constantFrom(GUEST_CID, GUEST_CID, GUEST_CID, 4),
  srcPort: fc.integer({ min: 1, max: 20 }), // never the witness's remote port
  dstPort: fc.constantFrom(1024, 1025, 49152, 49153, 5),
  flags: fc.integer({ min: 0, max: 7 }),
  bufAlloc: fc.constantFrom(0, 1, 4096, 262144, 0xffffffff),
  fwdCnt: fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff),
  payload: fc.uint8Array({ maxLength: 300 }),
});

test('random packets never break the driver or the witness connection', async (t) => {
  const peer = new ScriptedVsockPeer(GUEST_CID);
  const tr = InProcessTransport.sameThread(peer, { memoryBytes: 32 << 20 });
  const driver = await VsockDriver.start(tr, { rxBuffers: 16, txSlots: 16 });
  try {
    const server = driver.createServer((s) => s.on('error', () => {}).resume());
    await new Promise<void>((resolve) => server.listen(1024, resolve));
    // The witness: an outgoing connection to host port 777.
    const w = driver.connect({ cid: 2, port: WITNESS_PORT });
    await turns(5);
    peer.inject({ op: VSOCK_OP_RESPONSE, srcPort: WITNESS_PORT, dstPort: w.localPort });
    await new Promise((resolve) => w.once('connect', resolve));
    let witnessBytes = 0;
    w.on('data', (d: Buffer) => (witnessBytes += d.length));
    let expected = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(packet, { minLength: 1, maxLength: 30 }), async (pkts) => {
        const rstIn = peer.sent.length;
        for (const p of pkts) {
          if (p.dstPort === w.localPort && p.srcPort === WITNESS_PORT) continue;
          peer.inject({ ...p, type: p.type }, p.payload);
        }
        peer.inject({ op: VSOCK_OP_RW, srcPort: WITNESS_PORT, dstPort: w.localPort }, Buffer.alloc(10, 1));
        expected += 10;
        await turns(20);
        if (driver.brokenBy !== null) return false;
        if (witnessBytes !== expected) return false;
        // Every RST we sent answers a non-RST packet: never more RSTs than non-RST packets.
        const rstOut = peer.sent.slice(rstIn).filter((s) => s.hdr.op === VSOCK_OP_RST).length;
        return rstOut <= pkts.filter((p) => p.op !== VSOCK_OP_RST).length;
      }),
      { numRuns: 60 },
    );
    t.is(driver.brokenBy, null);
    t.false(w.destroyed);
    t.true(driver.stats.rxDropped > 0, 'malformed packets were dropped');
  } finally {
    driver.close();
    await tr.close();
  }
});
