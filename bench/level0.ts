// Level 0: pure computation, one thread. Operations per second for
//  - the driver half: add a chain + publish (the kick decision) + collect it from the used ring;
//  - the device half: take a chain (walk and validate) + push + flush (the interrupt decision);
//  - a round trip through both;
// for chains of 1 and 2 descriptors, in batches as a batching driver would. Also the vsock header codec.
import { decodeHeader, encodeHeader, VsockHeader, VSOCK_OP_RW } from '../drivers/virtio-vsock/header.js';
import { makeRingPair } from '../tests/support/ring-pair.js';
import { opsPerSecond, printTable, writeResults } from './report.js';

const QUEUE = 256;
const BATCH = 64; // chains per publish/flush, as a driver batching its writes would

/** A full round trip through both halves, a batch at a time. */
function roundTripLoop(descs: 1 | 2): (n: number) => void {
  const p = makeRingPair<number>(QUEUE, { eventIdx: true });
  const [addr] = p.buffer(4096);
  const { driver, device } = p;
  const onUsed = (): void => {};
  return (n: number): void => {
    for (let done = 0; done < n; done += BATCH) {
      for (let i = 0; i < BATCH; i++) {
        driver.chainBegin();
        driver.chainAdd(addr, 64, false);
        if (descs === 2) driver.chainAdd(addr + 64, 64, true);
        driver.chainCommit(i);
      }
      driver.publish();
      let c;
      while ((c = device.take()) !== null) device.push(c, descs === 2 ? 64 : 0);
      device.flush();
      driver.drainUsed(onUsed);
    }
  };
}

export default async function level0(args: string[]): Promise<void> {
  const ms = Number(args.find((a) => a.startsWith('--ms='))?.slice(5) ?? 1000);
  const rows: Array<{ operation: string; descriptors: number; ops_per_s: number; ns_per_op: number }> = [];
  for (const descs of [1, 2] as const) {
    // Round trip through both halves.
    const roundTrip = opsPerSecond(roundTripLoop(descs), ms, BATCH * 16);
    // Each half alone: the same loop with a stopwatch around each half's part.
    const p = makeRingPair<number>(QUEUE, { eventIdx: true });
    const [addr] = p.buffer(4096);
    let deviceNs = 0;
    let driverNs = 0;
    let count = 0;
    const deadline = process.hrtime.bigint() + BigInt(ms) * 1_000_000n;
    const noop = (): void => {};
    while (process.hrtime.bigint() < deadline) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < BATCH; i++) {
        p.driver.chainBegin();
        p.driver.chainAdd(addr, 64, false);
        if (descs === 2) p.driver.chainAdd(addr + 64, 64, true);
        p.driver.chainCommit(i);
      }
      p.driver.publish();
      const t1 = process.hrtime.bigint();
      let c;
      while ((c = p.device.take()) !== null) p.device.push(c, descs === 2 ? 64 : 0);
      p.device.flush();
      const t2 = process.hrtime.bigint();
      p.driver.drainUsed(noop);
      const t3 = process.hrtime.bigint();
      driverNs += Number(t1 - t0 + (t3 - t2));
      deviceNs += Number(t2 - t1);
      count += BATCH;
    }
    rows.push({ operation: 'driver add+kick+collect', descriptors: descs, ops_per_s: count / (driverNs / 1e9), ns_per_op: driverNs / count });
    rows.push({ operation: 'device take+push', descriptors: descs, ops_per_s: count / (deviceNs / 1e9), ns_per_op: deviceNs / count });
    rows.push({ operation: 'round trip (both halves)', descriptors: descs, ops_per_s: roundTrip, ns_per_op: 1e9 / roundTrip });
  }
  // Header codec.
  const buf = new DataView(new ArrayBuffer(64));
  const h = new VsockHeader().set(3, 1024, 2, 80, VSOCK_OP_RW, 4096, 0, 262144, 0);
  const out = new VsockHeader();
  const codec = opsPerSecond((n) => {
    for (let i = 0; i < n; i++) {
      h.fwdCnt = i;
      encodeHeader(h, buf, 0);
      decodeHeader(buf, 0, out);
    }
  }, ms, 10000);
  rows.push({ operation: 'vsock header encode+decode', descriptors: 0, ops_per_s: codec, ns_per_op: 1e9 / codec });
  printTable(`level 0: one thread, queue size ${QUEUE}, batches of ${BATCH} chains`, rows);
  const path = writeResults('level0', { queueSize: QUEUE, batch: BATCH, rows });
  console.log(`\nwrote ${path}`);
}
