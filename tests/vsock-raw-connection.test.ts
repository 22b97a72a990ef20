// driver.listenRaw / RawVsockConnection: the vsock connection API without node:stream.
// Against the device emulator in the same thread (the host side is the device's host
// API): data both ways, half-close both ways, a reset by the peer, writes after close,
// credit backpressure both ways, every tx mode. Against a scripted peer: the exact
// packets of an orderly close, the peer's credit, zero-copy completion.
import test from 'ava';
import type { Duplex } from 'node:stream';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import {
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
} from '../drivers/virtio-vsock/header.js';
import { type RawConnectionHandlers, type RawVsockConnection, type TxMode, VsockDriver, type VsockDriverOptions } from '../drivers/virtio-vsock/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { ScriptedVsockPeer, type SentPacket } from './support/vsock-scripted-peer.js';
import { pattern } from '../appliance/guest/pattern.js';
import { turns, until } from './support/event-turns.js';
import { collect } from './support/collect-stream.js';

const GUEST_CID = 3;
const PORT = 4000;

/** Resolves when cond() holds, checking after each turn of the event loop. */

/** Records everything a raw connection reports. */
class Recorder implements RawConnectionHandlers {
  readonly chunks: Buffer[] = [];
  ended = false;
  drains = 0;
  closed = false;
  closeErr: Error | null = null;
  /** Event names in order, data collapsed. */
  readonly order: string[] = [];
  onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    if (this.order[this.order.length - 1] !== 'data') this.order.push('data');
  }
  onEnd(): void {
    this.ended = true;
    this.order.push('end');
  }
  onDrain(): void {
    this.drains++;
  }
  onClose(err: Error | null): void {
    this.closed = true;
    this.closeErr = err;
    this.order.push('close');
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

// ---- Against the device emulator

async function withDevice(t: import('ava').ExecutionContext, opts: VsockDriverOptions = {}) {
  const device = new VsockDevice({ guestCid: GUEST_CID });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr, opts);
  t.teardown(async () => {
    driver.close();
    await tr.close();
  });
  const accepted: Array<{ conn: RawVsockConnection; rec: Recorder }> = [];
  const listener = driver.listenRaw(PORT, (conn) => {
    const rec = new Recorder();
    conn.setHandlers(rec);
    accepted.push({ conn, rec });
  });
  /** A host connection to the listener and the guest's end of it. */
  const open = async (): Promise<{ host: Duplex; conn: RawVsockConnection; rec: Recorder }> => {
    const n = accepted.length;
    const host = await device.host.connect(PORT);
    host.on('error', () => {});
    await until(() => accepted.length > n, 'accepted');
    return { host, ...accepted[n]! };
  };
  return { device, driver, listener, open };
}

test('listenRaw binds the port (EADDRINUSE when taken), close() unbinds and later REQUESTs are refused', async (t) => {
  const { device, driver, listener } = await withDevice(t);
  t.is(listener.port, PORT);
  t.throws(() => driver.listenRaw(PORT, () => {}), { code: 'EADDRINUSE' });
  const err = await new Promise<NodeJS.ErrnoException>((resolve) => driver.createServer().once('error', resolve).listen(PORT));
  t.is(err.code, 'EADDRINUSE', 'a VsockServer on the same port fails too');
  const ephemeral = driver.listenRaw(0, () => {});
  t.true(ephemeral.port > 0 && ephemeral.port !== PORT);
  ephemeral.close();
  listener.close();
  await t.throwsAsync(device.host.connect(PORT, { timeoutMs: 5000 }), { code: 'ECONNREFUSED' });
});

test('data both ways: bytes in Buffers of their own, write/writev out in order', async (t) => {
  const { open } = await withDevice(t);
  const { host, conn, rec } = await open();
  host.write('hello ');
  host.write('guest');
  await until(() => rec.bytes.toString() === 'hello guest', 'data at the guest');
  // Each chunk is the handler's: a later packet does not overwrite it.
  const first = rec.chunks[0]!;
  const firstCopy = Buffer.from(first);
  host.write(Buffer.alloc(first.length, 0x5a));
  await until(() => rec.bytes.length === 11 + first.length, 'more data');
  t.true(first.equals(firstCopy));

  const got = collect(host);
  const done: string[] = [];
  t.true(conn.write(Buffer.from('one '), () => done.push('one')));
  conn.writev([Buffer.from('two '), Buffer.from('three ')], () => done.push('two+three'));
  conn.write(Buffer.from('four'), () => done.push('four'));
  conn.end();
  t.true(conn.writeEnded);
  t.is((await got).toString(), 'one two three four');
  t.deepEqual(done, ['one', 'two+three', 'four'], 'callbacks in write order');
});

test('half-close by the host: onEnd, the guest still writes, then its end() closes the connection', async (t) => {
  const { open, driver } = await withDevice(t);
  const { host, conn, rec } = await open();
  const got = collect(host);
  host.end('last words');
  await until(() => rec.ended, 'onEnd');
  t.is(rec.bytes.toString(), 'last words');
  t.false(rec.closed, 'half-open: still open for writing');
  const reply = pattern(1, 200_000);
  conn.write(reply);
  conn.end();
  t.true((await got).equals(reply));
  await until(() => rec.closed, 'onClose');
  t.is(rec.closeErr, null);
  t.deepEqual(rec.order, ['data', 'end', 'close']);
  await until(() => driver.connectionCount === 0, 'connection forgotten');
});

test('half-close by the guest: the host gets end, still writes, and its end closes the guest side', async (t) => {
  const { open, driver } = await withDevice(t);
  const { host, conn, rec } = await open();
  const got = collect(host);
  conn.end(); // nothing written: SHUTDOWN SEND at once
  t.is((await got).length, 0);
  const data = pattern(2, 300_000);
  host.end(data);
  await until(() => rec.closed, 'onClose after the host end');
  t.true(rec.bytes.equals(data));
  t.deepEqual(rec.order, ['data', 'end', 'close']);
  t.is(rec.closeErr, null);
  await until(() => driver.connectionCount === 0, 'connection forgotten');
});

test('a reset by the peer closes with ECONNRESET; writes waiting behind it fail', async (t) => {
  const { open, driver } = await withDevice(t);
  const { host, conn, rec } = await open();
  host.pause(); // the host does not read: guest writes wait for credit
  const results: Array<Error | null | undefined> = [];
  for (let i = 0; i < 8; i++) conn.write(Buffer.alloc(128 * 1024, i), (err) => results.push(err));
  await until(() => driver.stats.txCreditStalls > 0, 'writes held by credit');
  await turns(20);
  const completedBefore = results.length;
  t.true(completedBefore < 4, `${completedBefore} writes completed within the window`);
  host.destroy(); // before either side ended: RST
  await until(() => rec.closed, 'onClose');
  t.is((rec.closeErr as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
  await until(() => results.length === 8, 'every write callback ran');
  t.true(results.slice(completedBefore).every((e) => e instanceof Error), 'the writes not sent failed');
  t.is(rec.drains, 0, 'no drain after close');
});

test('writes after end() or destroy() fail with EPIPE and return false', async (t) => {
  const { open } = await withDevice(t);
  const a = await open();
  a.conn.end();
  const e1 = await new Promise<Error | null | undefined>((resolve) => t.false(a.conn.write(Buffer.from('x'), resolve)));
  t.is((e1 as NodeJS.ErrnoException).code, 'EPIPE');
  const b = await open();
  b.conn.destroy();
  t.true(b.rec.closed, 'onClose before destroy() returns');
  t.is(b.rec.closeErr, null);
  const e2 = await new Promise<Error | null | undefined>((resolve) => t.false(b.conn.writev([Buffer.from('x')], resolve)));
  t.is((e2 as NodeJS.ErrnoException).code, 'EPIPE');
  t.true(b.conn.writeEnded);
  b.conn.destroy(); // twice: nothing
  // The host sees the guest's close as an end.
  await collect(b.host);
});

test('output backpressure: a host that does not read stalls the guest on credit; write() false, then drain', async (t) => {
  const { open, driver } = await withDevice(t, { txMode: 'single-copy' });
  const { host, conn, rec } = await open();
  host.pause();
  const data = pattern(3, 2 << 20);
  let completed = 0;
  let ok = true;
  let off = 0;
  while (ok && off < data.length) {
    ok = conn.write(data.subarray(off, off + 64 * 1024), () => completed++);
    off += 64 * 1024;
  }
  t.false(ok);
  t.true(conn.needDrain);
  await until(() => driver.stats.txCreditStalls > 0, 'credit stall');
  await turns(50);
  t.true(off < data.length, 'stopped before the end');
  t.is(rec.drains, 0);
  const got = collect(host);
  host.resume();
  await until(() => rec.drains === 1, 'drain');
  t.false(conn.needDrain);
  conn.write(data.subarray(off));
  conn.end();
  t.true((await got).equals(data));
});

test('input backpressure: paused, the guest holds bytes as unconsumed and the host stops at buf_alloc; resume delivers in order', async (t) => {
  const { open, driver } = await withDevice(t, { bufAlloc: 128 * 1024 });
  const { host, conn, rec } = await open();
  conn.pause();
  t.true(conn.isPaused());
  const data = pattern(4, 1 << 20);
  let hostDone = false;
  host.end(data, () => (hostDone = true));
  await until(() => conn.unconsumedBytes() === 128 * 1024, 'window full');
  await turns(50);
  t.is(conn.unconsumedBytes(), 128 * 1024, 'no byte beyond buf_alloc');
  t.is(rec.chunks.length, 0);
  t.false(hostDone);
  t.is(driver.stats.rxCreditOverruns, 0);
  conn.resume();
  await until(() => rec.ended, 'every byte and the end');
  t.true(rec.bytes.equals(data));
  t.true(driver.stats.maxRxUnconsumed <= 128 * 1024);
  t.true(driver.stats.creditUpdatesSent > 0);
  conn.end();
  await until(() => rec.closed, 'closed');
});

for (const mode of ['two-copy', 'single-copy', 'zero-copy', 'auto'] as const satisfies readonly TxMode[]) {
  test(`tx mode ${mode}: 4 MiB of writes and gathered writes arrive intact`, async (t) => {
    const { open, driver } = await withDevice(t, { txMode: mode });
    const { host, conn } = await open();
    const got = collect(host);
    const data = pattern(5, 4 << 20);
    // DMA buffers so that zero copy (and auto) send by descriptor; copy modes copy them.
    const dma = driver.allocBuffer(64 * 1024);
    t.teardown(() => driver.freeBuffer(dma));
    const before = { ...driver.stats };
    let off = 0;
    let cbs = 0;
    let i = 0;
    while (off < data.length) {
      const n = Math.min(64 * 1024 - (i % 3) * 1000, data.length - off);
      data.copy(dma, 0, off, off + n);
      const head = data.subarray(off, off + 100);
      // Alternate: one DMA write; a heap head + DMA body gathered.
      const written = new Promise<void>((resolve, reject) => {
        const cb = (err?: Error | null) => (err ? reject(err) : resolve());
        if (i % 2 === 0) conn.write(dma.subarray(0, n), cb);
        else conn.writev([head, dma.subarray(100, n)], cb);
      });
      await written; // the DMA buffer is reused: wait for its completion
      cbs++;
      off += n;
      i++;
    }
    conn.end();
    t.true((await got).equals(data));
    t.is(cbs, i);
    const zc = driver.stats.txZeroCopyBytes - before.txZeroCopyBytes;
    const copied = driver.stats.txCopiedBytes - before.txCopiedBytes;
    if (mode === 'two-copy' || mode === 'single-copy') t.is(zc, 0);
    else t.true(zc >= data.length - i * 100, `zero-copy bytes ${zc}`);
    if (mode === 'zero-copy') t.is(driver.stats.txZeroCopyMisses - before.txZeroCopyMisses, Math.floor(i / 2), 'the heap heads');
    t.true(copied + zc >= data.length);
  });
}

// ---- Against a scripted peer (the test plays the host, packet by packet)

async function withPeer(t: import('ava').ExecutionContext, opts: VsockDriverOptions = {}) {
  const peer = new ScriptedVsockPeer(GUEST_CID);
  const tr = InProcessTransport.sameThread(peer, { memoryBytes: 32 << 20 });
  const driver = await VsockDriver.start(tr, { rxBuffers: 16, txSlots: 16, ...opts });
  t.teardown(async () => {
    driver.close();
    await tr.close();
  });
  let last: { conn: RawVsockConnection; rec: Recorder } | null = null;
  driver.listenRaw(PORT, (conn) => {
    const rec = new Recorder();
    conn.setHandlers(rec);
    last = { conn, rec };
  });
  const HOST_PORT = 7000;
  const accept = async (peerBufAlloc = 256 * 1024) => {
    peer.inject({ op: VSOCK_OP_REQUEST, srcPort: HOST_PORT, dstPort: PORT, bufAlloc: peerBufAlloc });
    await until(() => last !== null && ops(peer, VSOCK_OP_RESPONSE).length === 1, 'RESPONSE');
    return last! as { conn: RawVsockConnection; rec: Recorder };
  };
  const inject = (op: number, fields: { flags?: number; bufAlloc?: number; fwdCnt?: number } = {}, payload?: Uint8Array) =>
    peer.inject({ op, srcPort: HOST_PORT, dstPort: PORT, ...fields }, payload);
  return { peer, driver, accept, inject };
}

function ops(peer: ScriptedVsockPeer, op: number): SentPacket[] {
  return peer.sent.filter((p) => p.hdr.op === op);
}

test('orderly close, packet by packet: SHUTDOWN SEND after the data; the peer shutting both ways gets one RST and no further SHUTDOWN', async (t) => {
  const { peer, driver, accept, inject } = await withPeer(t);
  const { conn, rec } = await accept();
  inject(VSOCK_OP_RW, {}, Buffer.from('GET / HTTP/1.0\r\n\r\n'));
  await until(() => rec.chunks.length === 1, 'data');
  conn.write(Buffer.from('HTTP/1.0 200 OK\r\n\r\n'));
  conn.end();
  await until(() => ops(peer, VSOCK_OP_SHUTDOWN).length === 1, 'SHUTDOWN');
  const sd = ops(peer, VSOCK_OP_SHUTDOWN)[0]!;
  t.is(sd.hdr.flags, VSOCK_SHUTDOWN_SEND);
  t.true(peer.sent.indexOf(sd) > peer.sent.indexOf(ops(peer, VSOCK_OP_RW)[0]!), 'after the data');
  t.false(rec.closed);
  inject(VSOCK_OP_SHUTDOWN, { flags: VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND });
  await until(() => rec.closed && ops(peer, VSOCK_OP_RST).length === 1, 'close and RST');
  await turns(20);
  t.deepEqual(rec.order, ['data', 'end', 'close']);
  t.is(rec.closeErr, null);
  t.is(ops(peer, VSOCK_OP_SHUTDOWN).length, 1, 'no SHUTDOWN after the peer closed');
  t.is(ops(peer, VSOCK_OP_RST).length, 1);
  t.is(driver.connectionCount, 0);
});

test('destroy() sends SHUTDOWN(RCV|SEND) and the connection goes when the peer answers RST', async (t) => {
  const { peer, driver, accept, inject } = await withPeer(t);
  const { conn, rec } = await accept();
  conn.destroy();
  t.true(rec.closed);
  await until(() => ops(peer, VSOCK_OP_SHUTDOWN).length === 1, 'SHUTDOWN');
  t.is(ops(peer, VSOCK_OP_SHUTDOWN)[0]!.hdr.flags, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
  t.is(driver.connectionCount, 1, 'CLOSING until the RST');
  inject(VSOCK_OP_RST);
  await until(() => driver.connectionCount === 0, 'forgotten');
  t.is(ops(peer, VSOCK_OP_RST).length, 0, 'an RST is never answered');
});

test('the peer credit bounds what is sent; writes queued meanwhile follow in order; drain once all completed', async (t) => {
  const { peer, accept, inject } = await withPeer(t, { txMode: 'single-copy' });
  const { conn, rec } = await accept(100_000);
  const data = pattern(6, 300_000);
  const done: number[] = [];
  t.false(conn.write(data.subarray(0, 150_000), () => done.push(1)));
  t.false(conn.write(data.subarray(150_000, 200_000), () => done.push(2)));
  t.false(conn.writev([data.subarray(200_000, 250_000), data.subarray(250_000)], () => done.push(3)));
  const sentBytes = (): number => ops(peer, VSOCK_OP_RW).reduce((n, p) => n + p.payload.length, 0);
  await until(() => sentBytes() === 100_000, 'first window');
  await turns(30);
  t.is(sentBytes(), 100_000, 'stops at the peer buf_alloc');
  t.deepEqual(done, []);
  inject(VSOCK_OP_CREDIT_UPDATE, { bufAlloc: 100_000, fwdCnt: 100_000 });
  await until(() => done.length === 1, 'first write completed');
  t.is(rec.drains, 0, 'no drain while writes wait');
  inject(VSOCK_OP_CREDIT_UPDATE, { bufAlloc: 400_000, fwdCnt: 200_000 });
  await until(() => rec.drains === 1, 'drain');
  t.deepEqual(done, [1, 2, 3]);
  await until(() => sentBytes() === data.length, 'every byte at the peer'); // completion means queued, not received
  t.true(Buffer.concat(ops(peer, VSOCK_OP_RW).map((p) => p.payload)).equals(data));
  // Queued writes went out together as one gathered write, cut into packets of up to 64 KiB.
  t.true(ops(peer, VSOCK_OP_RW).every((p) => p.payload.length <= 65536));
});

test('zero copy: the write callback waits for the device to return the buffer', async (t) => {
  const { peer, driver, accept } = await withPeer(t, { txMode: 'zero-copy' });
  const { conn, rec } = await accept();
  const buf = driver.allocBuffer(64 * 1024);
  t.teardown(() => driver.freeBuffer(buf));
  buf.fill(0x42);
  peer.holdTx = true;
  let done = false;
  t.false(conn.write(buf, () => (done = true)));
  await until(() => ops(peer, VSOCK_OP_RW).length === 1, 'packet sent');
  await turns(30);
  t.false(done, 'the device still holds the buffer');
  t.true(conn.needDrain);
  peer.holdTx = false;
  peer.releaseTx();
  await until(() => done && rec.drains === 1, 'completed and drained');
  t.true(ops(peer, VSOCK_OP_RW)[0]!.payload.equals(buf));
  t.true(driver.stats.txZeroCopyBytes >= buf.length);
});

test('bytes that arrive before setHandlers are delivered after it, then the end', async (t) => {
  const peer = new ScriptedVsockPeer(GUEST_CID);
  const tr = InProcessTransport.sameThread(peer, { memoryBytes: 32 << 20 });
  const driver = await VsockDriver.start(tr, { rxBuffers: 16, txSlots: 16 });
  t.teardown(async () => {
    driver.close();
    await tr.close();
  });
  let conn: RawVsockConnection | null = null;
  driver.listenRaw(PORT, (c) => (conn = c)); // handlers set later
  peer.inject({ op: VSOCK_OP_REQUEST, srcPort: 7001, dstPort: PORT });
  peer.inject({ op: VSOCK_OP_RW, srcPort: 7001, dstPort: PORT }, Buffer.from('early'));
  peer.inject({ op: VSOCK_OP_SHUTDOWN, srcPort: 7001, dstPort: PORT, flags: VSOCK_SHUTDOWN_SEND });
  await until(() => conn !== null && (conn as RawVsockConnection).unconsumedBytes() === 5, 'held');
  await turns(10);
  const rec = new Recorder();
  (conn as unknown as RawVsockConnection).setHandlers(rec);
  await until(() => rec.ended, 'end');
  t.is(rec.bytes.toString(), 'early');
  t.deepEqual(rec.order, ['data', 'end']);
});

test('zero copy then end(): SHUTDOWN follows the data at once; the connection waits for the buffer before it goes', async (t) => {
  const { peer, driver, accept, inject } = await withPeer(t, { txMode: 'zero-copy' });
  const { conn, rec } = await accept();
  const buf = driver.allocBuffer(64 * 1024);
  t.teardown(() => driver.freeBuffer(buf));
  buf.fill(0x5a);
  peer.holdTx = true;
  let done: Error | null | undefined;
  conn.write(buf, (err) => (done = err ?? null));
  conn.end();
  await until(() => ops(peer, VSOCK_OP_SHUTDOWN).length === 1, 'SHUTDOWN before the buffer came back');
  t.is(done, undefined, 'the device still holds the buffer');
  t.true(peer.sent.indexOf(ops(peer, VSOCK_OP_SHUTDOWN)[0]!) > peer.sent.indexOf(ops(peer, VSOCK_OP_RW)[0]!), 'behind the data');
  // The peer got everything and closes both ways while the buffer is still out.
  inject(VSOCK_OP_SHUTDOWN, { flags: VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND });
  await until(() => rec.order.includes('end'), 'end');
  await turns(30);
  t.false(rec.closed, 'not closed while the write is in flight');
  peer.holdTx = false;
  peer.releaseTx();
  await until(() => rec.closed, 'closed after the write completed');
  t.is(done, null, 'the write completed without an error');
  t.is(rec.closeErr, null);
  t.true(ops(peer, VSOCK_OP_RW)[0]!.payload.equals(buf));
});

test('auto with autoZeroCopyMinBytes: small DMA chunks are copied along with the head, large ones go by descriptor', async (t) => {
  const { peer, driver, accept } = await withPeer(t, { txMode: 'auto', autoZeroCopyMinBytes: 16 * 1024 });
  const { conn } = await accept();
  const small = driver.allocBuffer(4096);
  const large = driver.allocBuffer(32 * 1024);
  t.teardown(() => {
    driver.freeBuffer(small);
    driver.freeBuffer(large);
  });
  small.fill(1);
  large.fill(2);
  const head = Buffer.from('head');
  const before = { ...driver.stats };
  await new Promise<void>((resolve, reject) => conn.writev([head, small], (err) => (err ? reject(err) : resolve())));
  t.is(driver.stats.txZeroCopyBytes - before.txZeroCopyBytes, 0, 'the small DMA chunk was copied');
  t.is(driver.stats.txCopiedBytes - before.txCopiedBytes, head.length + small.length);
  await until(() => ops(peer, VSOCK_OP_RW).length === 1, 'one packet');
  t.true(ops(peer, VSOCK_OP_RW)[0]!.payload.equals(Buffer.concat([head, small])), 'head and small chunk in one packet');
  await new Promise<void>((resolve, reject) => conn.writev([head, large], (err) => (err ? reject(err) : resolve())));
  t.is(driver.stats.txZeroCopyBytes - before.txZeroCopyBytes, large.length, 'the large one by descriptor');
  await t.throwsAsync(VsockDriver.start(null as never, { autoZeroCopyMinBytes: -1 }), { message: /autoZeroCopyMinBytes -1/ });
});
