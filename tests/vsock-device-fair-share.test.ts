// What one VM's device may do in one event-loop turn (device/constants.ts, both shares:
// alone on its loop, and sharing it with other VMs): at most txChains chains or txBytes
// bytes from the tx queue and at most rxPackets packets or rxBytes bytes into rx
// buffers, the rest in later turns, so a VM that floods leaves the event loop to the daemon's other VMs in
// between; and what one VM's host side may queue towards its guest
// (hostToGuestLimit), host writers past it released oldest first. Counted per kick (one
// kick is one turn of the device), never timed.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import { HOST_READ_PROMISE_BYTES, TURN_SHARE_ALONE, TURN_SHARE_SHARED, type TurnShare } from '../drivers/virtio-vsock/device/constants.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import {
  VSOCK_HEADER_SIZE,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RW,
  VSOCK_RX_QUEUE,
  VSOCK_TX_QUEUE,
} from '../drivers/virtio-vsock/header.js';
import { VsockRawDriver } from './support/vsock-raw-driver.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

const PAYLOAD = 4096;
const PACKET = VSOCK_HEADER_SIZE + PAYLOAD;

/** Opens guest port `guestPort` -> host port 80 with a large guest window; returns the host socket. */
async function open(dev: VsockDevice, drv: VsockRawDriver, guestPort: number, bufAlloc: number): Promise<VsockHostSocket> {
  const got = new Promise<VsockHostSocket>((resolve) => {
    const l = dev.host.listen(80 + guestPort, (s) => {
      l.close();
      resolve(s);
    });
  });
  drv.send({ srcPort: guestPort, dstPort: 80 + guestPort, op: VSOCK_OP_REQUEST, bufAlloc });
  const s = await got;
  s.on('error', () => {});
  const answer = await drv.nextOn(guestPort, 80 + guestPort);
  if (answer.header.op !== VSOCK_OP_RESPONSE) throw new Error(`expected RESPONSE, got op ${answer.header.op}`);
  return s;
}

/**
 * The guest of connections firstPort + i -> firstPort + 80 + i (i < n) opens a window of
 * `bufAlloc` on each and gives the credit back as it takes packets: what each got, and how much.
 */
function takeEverything(drv: VsockRawDriver, firstPort: number, n: number, bufAlloc: number): { got: Buffer[][]; lengths: number[] } {
  const got = Array.from({ length: n }, () => [] as Buffer[]);
  const lengths = got.map(() => 0);
  for (let i = 0; i < n; i++) {
    const [src, dst] = [firstPort + i, firstPort + 80 + i];
    drv.route(src, dst, (p) => {
      if (p.header.op !== VSOCK_OP_RW) return;
      got[i]!.push(p.payload);
      lengths[i]! += p.payload.length;
      drv.send({ srcPort: src, dstPort: dst, op: VSOCK_OP_CREDIT_UPDATE, bufAlloc, fwdCnt: lengths[i]! });
    });
    drv.send({ srcPort: src, dstPort: dst, op: VSOCK_OP_CREDIT_UPDATE, bufAlloc, fwdCnt: 0 });
  }
  return { got, lengths };
}

const SHARES: Array<[string, Readonly<TurnShare>]> = [
  ['alone on its loop', TURN_SHARE_ALONE],
  ['sharing its loop', TURN_SHARE_SHARED],
];

for (const [name, share] of SHARES) {
  test(`${name}: rx: one turn writes at most rxBytes into the guest buffers; the rest follows in later turns, intact`, async (t) => {
    const dev = new VsockDevice({ guestCid: 3, ...(share === TURN_SHARE_ALONE ? {} : { turnShare: share }) });
    t.is(dev.turnShare, share);
    const drv = VsockRawDriver.sameThread(dev, { queueSize: 256, rxBuffers: 200, rxBufferBytes: PACKET });
    t.teardown(() => drv.close());
    const s = await open(dev, drv, 1000, 64 << 20);
    const data = randomBytes(2 << 20);
    s.write(data);
    // One kick is one turn: it stops at the byte share (PACKET-sized buffers, each filled).
    const before = dev.stats.rxPackets;
    dev.kick(VSOCK_RX_QUEUE);
    const first = dev.stats.rxPackets - before;
    const expected = Math.min(share.rxPackets, Math.ceil(share.rxBytes / PACKET));
    t.is(first, expected, `${first} packets in one turn (share ${share.rxBytes} bytes = ${expected} packets of ${PACKET})`);
    t.true(dev.hostToGuestQueuedBytes > 0, 'the rest waits for the next turns');
    // The later turns (scheduled by the device itself) deliver everything, in order.
    const got: Buffer[] = [];
    let n = 0;
    drv.route(1000, 1080, (p) => {
      if (p.header.op === VSOCK_OP_RW) {
        got.push(p.payload);
        n += p.payload.length;
      }
    });
    for (const p of drv.packets.splice(0)) if (p.header.op === VSOCK_OP_RW && p.header.dstPort === 1000) (got.push(p.payload), (n += p.payload.length));
    await drv.until(() => n >= data.length);
    t.is(sha(Buffer.concat(got)), sha(data));
    t.is(dev.hostToGuestQueuedBytes, 0);
  });

  test(`${name}: tx: one turn takes at most txBytes of chains from the tx queue; the rest follows in later turns, intact`, async (t) => {
    const dev = new VsockDevice({ guestCid: 3, turnShare: share });
    const drv = VsockRawDriver.sameThread(dev, { queueSize: 256 });
    t.teardown(() => drv.close());
    // Two connections, 50 packets of 4 KiB each (within each one's 256 KiB window).
    const sockets = [await open(dev, drv, 2000, 256 * 1024), await open(dev, drv, 2001, 256 * 1024)];
    const received = sockets.map(() => [] as Buffer[]);
    sockets.forEach((s, i) => s.on('data', (c: Buffer) => received[i]!.push(c)));
    const sent = sockets.map(() => randomBytes(50 * PAYLOAD));
    for (let k = 0; k < 50; k++) {
      for (let i = 0; i < 2; i++) {
        const bytes = drv.packetBytes({ srcPort: 2000 + i, dstPort: 2080 + i, op: VSOCK_OP_RW }, sent[i]!.subarray(k * PAYLOAD, (k + 1) * PAYLOAD));
        drv.sendBytes(bytes, {}, false);
      }
    }
    drv.tx.publish(); // published, no doorbell: the kick below is the one turn
    const before = dev.stats.txPackets;
    dev.kick(VSOCK_TX_QUEUE);
    const first = dev.stats.txPackets - before;
    t.is(first, Math.min(share.txChains, Math.ceil(share.txBytes / PACKET)), `${first} chains in one turn`);
    t.true(first < 100);
    await drv.until(() => received.every((r, i) => Buffer.concat(r).length >= sent[i]!.length));
    received.forEach((r, i) => t.is(sha(Buffer.concat(r)), sha(sent[i]!), `connection ${i}`));
  });

  test(`${name}: tx: tiny chains are bounded by txChains`, async (t) => {
    const dev = new VsockDevice({ guestCid: 3, maxQueueSize: 1024, turnShare: share });
    const drv = VsockRawDriver.sameThread(dev, { queueSize: 1024 });
    t.teardown(() => drv.close());
    await open(dev, drv, 3000, 256 * 1024);
    const chains = share.txChains + 100;
    for (let k = 0; k < chains; k++) drv.sendBytes(drv.packetBytes({ srcPort: 3000, dstPort: 3080, op: VSOCK_OP_CREDIT_UPDATE }), {}, false);
    drv.tx.publish();
    const before = dev.stats.txPackets;
    dev.kick(VSOCK_TX_QUEUE);
    t.is(dev.stats.txPackets - before, share.txChains);
    await drv.until(() => dev.stats.txPackets - before === chains);
    t.is(dev.stats.dropped.internalError, 0);
  });
}

test('the VM-wide host-to-guest queue stops at hostToGuestLimit; held writers go oldest first and every byte arrives', async (t) => {
  const LIMIT = 256 * 1024;
  const CHUNK = 16 * 1024;
  const dev = new VsockDevice({ guestCid: 3, hostToGuestLimit: LIMIT });
  const drv = VsockRawDriver.sameThread(dev, { queueSize: 256, rxBuffers: 128, rxBufferBytes: PACKET });
  t.teardown(() => drv.close());
  // Eight connections whose guest grants no credit yet (window 0): everything written queues in the device.
  const N = 8;
  const sockets: VsockHostSocket[] = [];
  for (let i = 0; i < N; i++) sockets.push(await open(dev, drv, 4000 + i, 0));
  const data = sockets.map(() => randomBytes(256 * 1024));
  const writesDone = sockets.map(() => 0);
  const releaseOrder: number[] = [];
  sockets.forEach((s, i) => {
    for (let off = 0; off < data[i]!.length; off += CHUNK) {
      s.write(data[i]!.subarray(off, off + CHUNK), () => {
        writesDone[i]!++;
        releaseOrder.push(i);
      });
    }
  });
  await drv.sync();
  await new Promise((r) => setImmediate(r));
  const queued = dev.hostToGuestQueuedBytes;
  // Each connection may have one write past the limit in (the write that crossed it is taken, its callback held).
  t.true(queued >= LIMIT, `${queued} bytes queued: filled up to the limit`);
  t.true(queued <= LIMIT + N * CHUNK, `${queued} bytes queued, at most ${LIMIT} + one ${CHUNK}-byte write per connection`);
  const total = data.reduce((n, d) => n + d.length, 0);
  t.true(queued < total, 'writers are held back');
  // The guest opens its windows: everything drains, every connection's writes complete.
  const { got, lengths } = takeEverything(drv, 4000, N, 64 * 1024);
  await drv.until(() => lengths.every((n, i) => n >= data[i]!.length));
  for (let i = 0; i < N; i++) t.is(sha(Buffer.concat(got[i]!)), sha(data[i]!), `connection ${i}`);
  await new Promise((r) => setImmediate(r));
  t.deepEqual(writesDone, sockets.map(() => data[0]!.length / CHUNK));
  t.is(dev.hostToGuestQueuedBytes, 0);
  // Held writers were let go in turn: no connection finished all its writes before every
  // other one had some completed past the limit.
  const firstDone = releaseOrder.findIndex((_, k) => releaseOrder.slice(0, k + 1).filter((x) => x === releaseOrder[k]).length === data[0]!.length / CHUNK);
  const startedBy = new Set(releaseOrder.slice(0, firstDone + 1));
  t.is(startedBy.size, N, `every connection had writes completed before the first finished (${[...startedBy].join(',')})`);
});

test('held host readers go a read at a time: the VM queue overshoots its limit by at most one read, not one per reader', async (t) => {
  // A reader let go reads in the next poll phase, so freeing room for all of them at once
  // let a flooding VM's 100 sockets read 64 KiB each in one phase (HOST_READ_PROMISE_BYTES).
  const LIMIT = 256 * 1024;
  const READ = HOST_READ_PROMISE_BYTES;
  const READS = 4;
  const dev = new VsockDevice({ guestCid: 3, hostToGuestLimit: LIMIT });
  const drv = VsockRawDriver.sameThread(dev, { queueSize: 256, rxBuffers: 128, rxBufferBytes: PACKET });
  t.teardown(() => drv.close());
  const N = 16;
  const sockets: VsockHostSocket[] = [];
  for (let i = 0; i < N; i++) sockets.push(await open(dev, drv, 5000 + i, 0));
  const data = sockets.map(() => randomBytes(READ * READS));
  let maxQueued = 0;
  const firstResumes: number[] = [];
  // A host socket reader as host/splice.ts drives one: read after read while writeCopied
  // says go on; held, the next read comes in a later poll phase (here: setImmediate).
  const readFrom = (i: number, k: number): void => {
    for (; k < READS; ) {
      const go = sockets[i]!.writeCopied(data[i]!.subarray(k * READ), READ, () => {
        if (!firstResumes.includes(i)) firstResumes.push(i);
        setImmediate(() => readFrom(i, k));
      });
      maxQueued = Math.max(maxQueued, dev.hostToGuestQueuedBytes);
      k++;
      if (!go) return;
    }
  };
  for (let i = 0; i < N; i++) readFrom(i, 0);
  // Every reader's first read is taken (it was read before the reader heard of the limit):
  // 4 fit, the other 12 are over it and those readers wait.
  t.is(dev.hostToGuestQueuedBytes, N * READ + (LIMIT / READ - 1) * READ);
  const heldFirst = firstResumes.length;
  maxQueued = 0;
  // The guest opens every window and takes everything.
  const { got, lengths } = takeEverything(drv, 5000, N, 1 << 20);
  await drv.until(() => lengths.every((n, i) => n >= data[i]!.length));
  for (let i = 0; i < N; i++) t.is(sha(Buffer.concat(got[i]!)), sha(data[i]!), `connection ${i}`);
  t.is(heldFirst, 0);
  // Once the guest drains it below the limit, readers let go bring one read each.
  t.true(maxQueued > LIMIT - READ, `${maxQueued} bytes queued at most while draining: readers were let go`);
  t.true(maxQueued <= LIMIT + READ, `${maxQueued} bytes queued at most while draining: the limit and one read over it, not one read per reader let go`);
  t.deepEqual(firstResumes.slice(0, N - 1), Array.from({ length: N - 1 }, (_, k) => k + 1), 'held readers went oldest first');
  await new Promise((r) => setImmediate(r));
  t.is(dev.hostToGuestQueuedBytes, 0);
});
