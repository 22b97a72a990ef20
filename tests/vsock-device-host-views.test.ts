// Zero copy to the host (VsockHostSocket.readViews, device/held-chains.ts): host readers
// get views of guest memory, the guest's tx buffer goes back only when the reader is done,
// a reader that holds views stalls its guest by credit (nothing lost, nothing copied),
// holding is budgeted per device and per connection (beyond it: copies, counted), and a
// ring stop or reset ends every hold without pushing a chain twice.
import test from 'ava';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONN_BUF_ALLOC_BYTES } from '../drivers/virtio-vsock/device/constants.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { spliceStreams } from '../drivers/virtio-vsock/host/splice.js';
import { VSOCK_TX_QUEUE } from '../drivers/virtio-vsock/header.js';
import { pattern as seeded } from '../appliance/guest/pattern.js';
import { RawStream, SHAPES, VsockRawDriver } from './support/vsock-raw-driver.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A host listener whose reader keeps every view and finishes them only when told. */
class HoldingReader {
  /** Views not finished yet (valid until finished). */
  readonly views: Buffer[] = [];
  /** Copies of the finished views, taken just before each was finished: the stream so far. */
  readonly received: Buffer[] = [];
  private viewBytes = 0;
  private dones: Array<() => void> = [];
  /** Finish each view as it comes (true) or keep it (false). */
  passThrough = false;
  socket: VsockHostSocket | null = null;
  ended = false;
  error: Error | null = null;
  /** Views finished so far. */
  finished = 0;

  attach(s: VsockHostSocket): void {
    this.socket = s;
    s.on('error', (e: Error) => (this.error = e));
    s.on('end', () => (this.ended = true));
    s.readViews((v, done) => {
      this.viewBytes += v.length;
      this.views.push(v);
      this.dones.push(done);
      if (this.passThrough) this.finish();
    });
  }

  /** Bytes handed so far. */
  get bytes(): number {
    return this.viewBytes;
  }

  /** Finishes the views kept so far, oldest first (or the first n), keeping a copy of each. */
  finish(n = this.dones.length): void {
    for (const d of this.dones.splice(0, n)) {
      this.received.push(Buffer.from(this.views.shift()!));
      this.finished++;
      d();
    }
  }

  /** Everything handed, in order (finished copies, then the views still held). */
  all(): Buffer {
    return Buffer.concat([...this.received, ...this.views]);
  }

  get kept(): number {
    return this.dones.length;
  }
}

for (const packed of [false, true]) {
  const ring = packed ? 'packed ring' : 'split ring';

  test(`${ring}: a reader holding views stalls the guest by credit; nothing is copied or lost, and finishing lets it go on`, async (t) => {
    const dev = new VsockDevice({ guestCid: 3 });
    const drv = VsockRawDriver.sameThread(dev, { packed });
    const reader = new HoldingReader();
    const l = dev.host.listen(80, (s) => reader.attach(s));
    try {
      const st = new RawStream(drv, 50, 80);
      await st.connect();
      const data = seeded(3, 1 << 20);
      const writing = st.write(data, 16 * 1024);
      // Held chains bring no interrupt: look with probes until the window is used.
      while (reader.bytes < CONN_BUF_ALLOC_BYTES) await drv.sync();
      await drv.sync();
      // The window is full and the guest waits: exactly buf_alloc bytes handed, all as views.
      t.is(reader.bytes, CONN_BUF_ALLOC_BYTES);
      t.is(st.txCnt, CONN_BUF_ALLOC_BYTES);
      t.true(dev.stats.guestToHostCreditStalls >= 1);
      t.is(dev.stats.toHostCopiedBytes, 0);
      t.is(dev.stats.toHostViewBytes, CONN_BUF_ALLOC_BYTES);
      t.is(dev.heldTxChains, CONN_BUF_ALLOC_BYTES / (16 * 1024));
      // The guest has not had those buffers back.
      t.is(drv.txInFlight, dev.heldTxChains);
      // The views are the guest's bytes, in order, while held (the device copied nothing).
      t.is(sha(reader.all()), sha(data.subarray(0, CONN_BUF_ALLOC_BYTES)));
      t.is(reader.views[0]!.buffer, reader.views[1]!.buffer, 'views of one guest memory');

      // Finishing returns the buffers and the credit; from now on the reader passes through.
      reader.passThrough = true;
      reader.finish();
      await writing;
      st.end();
      await drv.until(() => reader.ended);
      t.is(reader.bytes, data.length);
      t.is(sha(reader.all()), sha(data));
      t.is(dev.stats.toHostCopiedBytes, 0);
      t.is(dev.stats.toHostViewBytes, data.length);
      await drv.sync();
      t.is(dev.heldTxChains, 0);
      t.is(drv.txInFlight, 0);
    } finally {
      l.close();
      await drv.close();
    }
  });

  test(`${ring}: views finished out of order across connections go back as each reader finishes`, async (t) => {
    const dev = new VsockDevice({ guestCid: 3 });
    const drv = VsockRawDriver.sameThread(dev, { packed });
    const readers = [new HoldingReader(), new HoldingReader()];
    let next = 0;
    const l = dev.host.listen(80, (s) => readers[next++]!.attach(s));
    try {
      const a = new RawStream(drv, 50, 80);
      const b = new RawStream(drv, 51, 80);
      await a.connect();
      await b.connect();
      const da = seeded(5, 96 * 1024);
      const db = seeded(6, 96 * 1024);
      await a.write(da, 32 * 1024);
      await b.write(db, 32 * 1024);
      await drv.sync();
      t.is(dev.heldTxChains, 6);
      // The second connection's reader finishes first.
      readers[1]!.finish();
      await drv.sync();
      t.is(dev.heldTxChains, 3);
      t.is(drv.txInFlight, 3);
      readers[0]!.finish(2);
      await drv.sync();
      t.is(dev.heldTxChains, 1);
      readers[0]!.finish();
      await drv.sync();
      t.is(dev.heldTxChains, 0);
      t.is(drv.txInFlight, 0);
      t.is(sha(readers[0]!.all()), sha(da));
      t.is(sha(readers[1]!.all()), sha(db));
    } finally {
      l.close();
      await drv.close();
    }
  });
}

test('holding is budgeted: a connection holds at most a quarter of the tx ring; beyond it payloads are copied (counted) and the stream stays whole', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev, { queueSize: 128 });
  const reader = new HoldingReader();
  const l = dev.host.listen(80, (s) => reader.attach(s));
  try {
    const st = new RawStream(drv, 50, 80);
    await st.connect();
    // 1 KiB packets: the 256 KiB window is 256 packets, above the 32 a connection may hold.
    const data = seeded(9, CONN_BUF_ALLOC_BYTES);
    const writing = st.write(data, 1024);
    await drv.until(() => reader.bytes >= CONN_BUF_ALLOC_BYTES);
    await drv.sync();
    t.is(dev.heldTxChains, 128 / 4);
    t.is(dev.stats.toHostViewBytes, 32 * 1024);
    t.is(dev.stats.toHostCopiedBytes, CONN_BUF_ALLOC_BYTES - 32 * 1024);
    // The guest got every copied packet's buffer back at once.
    t.is(drv.txInFlight, 32);
    reader.passThrough = true;
    reader.finish();
    await writing;
    st.end();
    await drv.until(() => reader.ended);
    t.is(sha(reader.all()), sha(data));
    await drv.sync();
    t.is(dev.heldTxChains, 0);
  } finally {
    l.close();
    await drv.close();
  }
});

test('a payload in one descriptor is one view, one spread over several is a view per descriptor; over 64, a copy (counted)', async (t) => {
  const manyCuts = { cuts: [44, ...Array.from({ length: 70 }, () => 40)] };
  for (const [name, shape, views, copied] of [
    ['header and data in separate descriptors', SHAPES['header and data in separate descriptors']!, 1, false],
    ['indirect table, header and data separate', SHAPES['indirect table, header and data separate']!, 1, false],
    ['header split oddly, data split over three', SHAPES['header split oddly, data split over three']!, 4, false],
    ['data split over several descriptors', SHAPES['data split over several descriptors']!, 5, false],
    ['data over 71 descriptors', manyCuts, 1, true],
  ] as const) {
    const dev = new VsockDevice({ guestCid: 3 });
    const drv = VsockRawDriver.sameThread(dev);
    const reader = new HoldingReader();
    reader.passThrough = true;
    const l = dev.host.listen(80, (s) => reader.attach(s));
    try {
      const st = new RawStream(drv, 50, 80);
      await st.connect();
      const payload = seeded(11, 3000);
      drv.send({ srcPort: 50, dstPort: 80, op: 5, len: payload.length, bufAlloc: 65536, fwdCnt: 0 }, payload, shape);
      await drv.sync();
      t.is(sha(reader.all()), sha(payload), name);
      t.is(reader.finished, views, name);
      t.is(dev.stats.toHostCopiedBytes, copied ? payload.length : 0, name);
      t.is(dev.stats.toHostViewBytes, copied ? 0 : payload.length, name);
      t.is(dev.heldTxChains, 0, name);
      t.is(drv.txInFlight, 0, name);
    } finally {
      l.close();
      await drv.close();
    }
  }
});

test('the tx ring stops while views are held: the chains go back to the guest once, their readers lose the connection, a late done() does nothing', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  const reader = new HoldingReader();
  const passing = new HoldingReader();
  passing.passThrough = true;
  const l = dev.host.listen(80, (s) => reader.attach(s));
  const l2 = dev.host.listen(81, (s) => passing.attach(s));
  try {
    const st = new RawStream(drv, 50, 80);
    const other = new RawStream(drv, 51, 81);
    await st.connect();
    await other.connect();
    await st.write(seeded(1, 64 * 1024), 16 * 1024);
    await other.write(seeded(2, 1000), 1000);
    await drv.sync();
    t.is(dev.heldTxChains, 4);
    t.is(drv.txInFlight, 4);
    // vhost-user GET_VRING_BASE, as a stopping front end sends it.
    dev.queueStopped(VSOCK_TX_QUEUE);
    t.is(dev.heldTxChains, 0);
    await new Promise((resolve) => reader.socket!.once('close', resolve));
    t.is((reader.error as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
    // The reader that held nothing keeps its connection.
    t.false(passing.socket!.destroyed);
    // The returned chains are in the used ring, once each.
    t.is(drv.tx.drainUsed(() => {}), 4);
    // The reader finishes later: the ring it held from is gone, nothing is pushed again.
    t.notThrows(() => reader.finish());
    t.false(drv.tx.hasUsed());
    t.is(dev.stats.dropped.internalError, 0);
  } finally {
    l.close();
    l2.close();
    await drv.close();
  }
});

test('readViews after bytes were read as a stream: those come first, in order; a second readViews is refused', async (t) => {
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  let sock: VsockHostSocket | null = null;
  const l = dev.host.listen(80, (s) => {
    s.on('error', () => {});
    s.pause();
    sock = s;
  });
  try {
    const st = new RawStream(drv, 50, 80);
    await st.connect();
    const data = seeded(13, 200 * 1024);
    await st.write(data.subarray(0, 50 * 1024), 10 * 1024);
    await drv.sync();
    const got: Buffer[] = [];
    sock!.readViews((v, done) => {
      got.push(Buffer.from(v));
      done();
    });
    t.throws(() => sock!.readViews(() => {}), { code: 'ERR_VSOCK_VIEW_READER' });
    await st.write(data.subarray(50 * 1024), 10 * 1024);
    st.end();
    await once(sock!, 'end');
    t.is(sha(Buffer.concat(got)), sha(data));
  } finally {
    l.close();
    await drv.close();
  }
});

test('spliced to a host socket that keeps up, a view is freed as its write goes through: no chain stays held; a backed-up socket holds them, and every byte arrives', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-views-'));
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(join(dir, 's'), resolve));
  const accepted = once(server, 'connection');
  const client = connect(join(dir, 's'));
  const [hostEnd] = (await accepted) as [Socket];
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev);
  const l = dev.host.listen(80, (vs) => spliceStreams(vs, hostEnd));
  try {
    const got: Buffer[] = [];
    client.on('data', (c: Buffer) => got.push(c));
    const st = new RawStream(drv, 50, 80);
    await st.connect();
    // 64 KiB fit the socket's kernel buffer: every write goes straight through.
    const small = seeded(17, 64 * 1024);
    await st.write(small, 4096);
    await drv.sync();
    t.is(dev.stats.toHostViewBytes, small.length);
    t.is(dev.stats.txChainsHeld, 0, 'no chain outlived its packet');
    // A reader that stops: past the kernel buffer, writes wait in the socket and hold their views.
    client.pause();
    const big = seeded(18, 1 << 20);
    const writing = st.write(big, 64 * 1024);
    while (dev.heldTxChains === 0) await drv.sync();
    t.true(dev.stats.txChainsHeld > 0);
    client.resume();
    await writing;
    st.end();
    await once(client, 'end');
    t.is(sha(Buffer.concat(got)), sha(Buffer.concat([small, big])));
    t.is(dev.stats.toHostCopiedBytes, 0);
    await drv.sync();
    t.is(dev.heldTxChains, 0);
  } finally {
    l.close();
    client.destroy();
    hostEnd.destroy();
    server.close();
    await drv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
