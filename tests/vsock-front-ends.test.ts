// The driver's two front ends over one connection model: a Duplex VsockSocket
// (createServer) and a RawVsockConnection (listenRaw) driven through the same scenarios
// against the device emulator in the same thread: SHA-256 transfers both ways in every
// tx mode, a slow reader held to buf_alloc by credit, half-close from either side, a
// reset by the peer, tx ring-full back pressure. The socket is an adapter over the raw
// connection, so each scenario must behave the same through both.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { type RawVsockConnection, type TxMode, VsockDriver, type VsockDriverOptions, type VsockSocket } from '../drivers/virtio-vsock/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { pattern } from '../appliance/guest/pattern.js';
import { turns, until } from './support/event-turns.js';
import { collect } from './support/collect-stream.js';

const GUEST_CID = 3;
const PORT = 4100;
const TX_MODES = ['two-copy', 'single-copy', 'zero-copy', 'auto'] as const satisfies readonly TxMode[];

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** The guest end as a scenario sees it, whichever front end is under it. */
interface GuestEnd {
  write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean;
  writev(chunks: Uint8Array[], cb?: (err?: Error | null) => void): void;
  end(): void;
  destroy(): void;
  pause(): void;
  resume(): void;
  readonly chunks: Buffer[];
  readonly order: string[];
  ended: boolean;
  closed: boolean;
  closeErr: Error | null;
  drains: number;
}

/** Event recording shared by both front ends: data collapsed, end, close. */
function recorder(): Pick<GuestEnd, 'chunks' | 'order' | 'ended' | 'closed' | 'closeErr' | 'drains'> & {
  data(c: Buffer): void;
  onEnd(): void;
  onClose(err: Error | null): void;
} {
  const r = {
    chunks: [] as Buffer[],
    order: [] as string[],
    ended: false,
    closed: false,
    closeErr: null as Error | null,
    drains: 0,
    data(c: Buffer): void {
      r.chunks.push(c);
      if (r.order[r.order.length - 1] !== 'data') r.order.push('data');
    },
    onEnd(): void {
      r.ended = true;
      r.order.push('end');
    },
    onClose(err: Error | null): void {
      r.closed = true;
      r.closeErr = err;
      r.order.push('close');
    },
  };
  return r;
}

function rawEnd(conn: RawVsockConnection): GuestEnd {
  const r = recorder();
  conn.setHandlers({ onData: r.data, onEnd: r.onEnd, onDrain: () => r.drains++, onClose: r.onClose });
  return Object.assign(r, {
    write: (c: Uint8Array, cb?: (err?: Error | null) => void) => conn.write(c, cb),
    writev: (cs: Uint8Array[], cb?: (err?: Error | null) => void) => void conn.writev(cs, cb),
    end: () => conn.end(),
    destroy: () => conn.destroy(),
    pause: () => conn.pause(),
    resume: () => conn.resume(),
  });
}

function socketEnd(s: VsockSocket): GuestEnd {
  const r = recorder();
  let error: Error | null = null;
  s.on('data', r.data);
  s.on('end', r.onEnd);
  s.on('drain', () => r.drains++);
  s.on('error', (e: Error) => (error ??= e));
  s.on('close', () => r.onClose(error));
  return Object.assign(r, {
    write: (c: Uint8Array, cb?: (err?: Error | null) => void) => s.write(c, cb),
    writev: (cs: Uint8Array[], cb?: (err?: Error | null) => void) => {
      // Corked writes reach _writev: one gathered write, as raw.writev.
      s.cork();
      for (let i = 0; i < cs.length; i++) s.write(cs[i]!, i === cs.length - 1 ? cb : undefined);
      s.uncork();
    },
    end: () => void s.end(),
    destroy: () => void s.destroy(),
    pause: () => void s.pause(),
    resume: () => void s.resume(),
  });
}

type FrontEnd = 'socket' | 'raw';

async function withGuest(t: ExecutionContext, frontEnd: FrontEnd, opts: VsockDriverOptions = {}) {
  const device = new VsockDevice({ guestCid: GUEST_CID });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr, opts);
  t.teardown(async () => {
    driver.close();
    await tr.close();
  });
  const accepted: GuestEnd[] = [];
  // Half-open like the raw connection, so both front ends see the same close sequence.
  if (frontEnd === 'raw') driver.listenRaw(PORT, (c) => accepted.push(rawEnd(c)));
  else driver.createServer({ allowHalfOpen: true }, (s) => accepted.push(socketEnd(s))).listen(PORT);
  const open = async (): Promise<{ host: Duplex; guest: GuestEnd }> => {
    const n = accepted.length;
    const host = await device.host.connect(PORT);
    host.on('error', () => {});
    await until(() => accepted.length > n, 'accepted');
    return { host, guest: accepted[n]! };
  };
  return { device, driver, open };
}

for (const frontEnd of ['socket', 'raw'] as const) {
  for (const mode of TX_MODES) {
    test(`${frontEnd}, tx mode ${mode}: 4 MiB each way, DMA and heap chunks, single and gathered writes, SHA-256 intact`, async (t) => {
      const { driver, open } = await withGuest(t, frontEnd, { txMode: mode });
      const { host, guest } = await open();
      const got = collect(host);
      const data = pattern(11, 4 << 20);
      const dma = driver.allocBuffer(64 * 1024);
      t.teardown(() => driver.freeBuffer(dma));
      const before = { ...driver.stats };
      let off = 0;
      let i = 0;
      while (off < data.length) {
        const n = Math.min(64 * 1024 - (i % 3) * 1000, data.length - off);
        data.copy(dma, 0, off, off + n);
        await new Promise<void>((resolve, reject) => {
          const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
          if (i % 2 === 0) guest.write(dma.subarray(0, n), cb);
          else guest.writev([data.subarray(off, off + 100), dma.subarray(100, n)], cb);
        }); // the DMA buffer is reused: wait for its completion
        off += n;
        i++;
      }
      // And the other way, while the guest still may write.
      const back = pattern(12, 4 << 20);
      host.end(back);
      await until(() => guest.ended, 'the host data and end at the guest');
      t.is(sha(Buffer.concat(guest.chunks)), sha(back));
      guest.end();
      t.is(sha(await got), sha(data));
      await until(() => guest.closed, 'closed');
      t.is(guest.closeErr, null);
      t.deepEqual(guest.order, ['data', 'end', 'close']);
      const zc = driver.stats.txZeroCopyBytes - before.txZeroCopyBytes;
      if (mode === 'two-copy' || mode === 'single-copy') t.is(zc, 0);
      else t.true(zc >= data.length - i * 100, `zero-copy bytes ${zc}`);
      await until(() => driver.connectionCount === 0, 'connection forgotten');
    });
  }

  test(`${frontEnd}: a slow reader holds the peer to buf_alloc by credit; resumed, every byte arrives in order`, async (t) => {
    const bufAlloc = 128 * 1024;
    const { driver, open } = await withGuest(t, frontEnd, { bufAlloc });
    const { host, guest } = await open();
    guest.pause();
    const data = pattern(13, 1 << 20);
    let hostDone = false;
    host.end(data, () => (hostDone = true));
    await until(() => driver.stats.maxRxUnconsumed >= bufAlloc - 64 * 1024, 'the window fills');
    await turns(50);
    t.false(hostDone, 'the host is held back');
    t.true(driver.stats.maxRxUnconsumed <= bufAlloc, `unconsumed ${driver.stats.maxRxUnconsumed}`);
    t.is(driver.stats.rxCreditOverruns, 0);
    const seen = Buffer.concat(guest.chunks).length;
    t.true(seen < data.length, 'paused: not everything delivered');
    // Read slowly: resume for a turn, pause again, a few times, then for good.
    for (let k = 0; k < 5; k++) {
      guest.resume();
      await turns(3);
      guest.pause();
      await turns(10);
    }
    guest.resume();
    await until(() => guest.ended, 'every byte and the end');
    t.is(sha(Buffer.concat(guest.chunks)), sha(data));
    t.true(driver.stats.maxRxUnconsumed <= bufAlloc);
    t.true(driver.stats.creditUpdatesSent > 0);
    guest.end();
    await until(() => guest.closed, 'closed');
  });

  test(`${frontEnd}: half-close by the host, then by the guest; and the guest first, then the host`, async (t) => {
    const { driver, open } = await withGuest(t, frontEnd);
    // The host ends first: the guest still writes, then its end closes the connection.
    const a = await open();
    const gotA = collect(a.host);
    a.host.end('last words');
    await until(() => a.guest.ended, 'end at the guest');
    t.false(a.guest.closed, 'half-open');
    const reply = pattern(14, 300_000);
    a.guest.write(reply);
    a.guest.end();
    t.true((await gotA).equals(reply));
    await until(() => a.guest.closed, 'closed');
    t.deepEqual(a.guest.order, ['data', 'end', 'close']);
    t.is(a.guest.closeErr, null);
    // The guest ends first (nothing written): the host gets end, writes, ends.
    const b = await open();
    const gotB = collect(b.host);
    b.guest.end();
    t.is((await gotB).length, 0);
    const data = pattern(15, 300_000);
    b.host.end(data);
    await until(() => b.guest.closed, 'closed after the host end');
    t.true(Buffer.concat(b.guest.chunks).equals(data));
    t.deepEqual(b.guest.order, ['data', 'end', 'close']);
    t.is(b.guest.closeErr, null);
    await until(() => driver.connectionCount === 0, 'connections forgotten');
  });

  test(`${frontEnd}: a reset by the peer mid-transfer closes with ECONNRESET; writes waiting on credit fail`, async (t) => {
    const { driver, open } = await withGuest(t, frontEnd);
    const { host, guest } = await open();
    host.pause(); // the host does not read: guest writes wait for credit
    const results: Array<Error | null | undefined> = [];
    for (let i = 0; i < 8; i++) guest.write(Buffer.alloc(128 * 1024, i), (err) => results.push(err));
    await until(() => driver.stats.txCreditStalls > 0, 'writes held by credit');
    await turns(20);
    const completedBefore = results.length;
    t.true(completedBefore < 4, `${completedBefore} writes completed within the window`);
    host.destroy(); // before either side ended: RST
    await until(() => guest.closed, 'closed');
    t.is((guest.closeErr as NodeJS.ErrnoException | null)?.code, 'ECONNRESET');
    await until(() => results.length === 8, 'every write callback ran');
    t.true(results.slice(completedBefore).every((e) => e instanceof Error), 'the writes not sent failed');
    await until(() => driver.connectionCount === 0, 'connection forgotten');
  });

  for (const mode of ['single-copy', 'zero-copy'] as const) {
    test(`${frontEnd}, ${mode}: a full tx ring holds writes back until the device returns buffers; nothing lost`, async (t) => {
      // Two data slots and a 16-entry ring: copies run out of slots, zero copy of descriptors.
      const { driver, open } = await withGuest(t, frontEnd, { txMode: mode, txSlots: 2, queueSize: 16 });
      const { host, guest } = await open();
      const got = collect(host);
      const data = pattern(16, 2 << 20);
      const dma = driver.allocBuffer(data.length);
      t.teardown(() => driver.freeBuffer(dma));
      data.copy(dma);
      // 4 KiB writes, all at once: far more packets than ring entries.
      let ok = true;
      for (let off = 0; off < data.length; off += 4096) ok = guest.write(dma.subarray(off, off + 4096)) && ok;
      t.false(ok, 'write() reported back pressure');
      guest.end();
      t.is(sha(await got), sha(data));
      t.true(driver.stats.txRingStalls > 0, 'the ring was full');
      host.end();
      await until(() => guest.closed, 'closed');
      t.is(guest.closeErr, null);
    });
  }
}

test('socket and raw connection share one model: bytes counters, reset, outgoing connect through the same core', async (t) => {
  const device = new VsockDevice({ guestCid: GUEST_CID });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 32 << 20 });
  const driver = await VsockDriver.start(tr);
  t.teardown(async () => {
    driver.close();
    await tr.close();
  });
  // Outgoing: the socket's 'connect' is the raw connection's onConnect.
  let hostSide: Duplex | null = null;
  device.host.listen(7000, (s) => {
    hostSide = s;
    s.on('error', () => {});
  });
  const s = driver.connect({ cid: 2, port: 7000 });
  t.true(s.connecting);
  t.is(s.vsockState, 'CONNECTING');
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  t.false(s.connecting);
  t.is(s.vsockState, 'ESTABLISHED');
  await until(() => hostSide !== null, 'host accepted');
  const echoed = new Promise<Buffer>((resolve) => hostSide!.once('data', resolve));
  s.write('ping');
  t.is((await echoed).toString(), 'ping');
  hostSide!.write('pong!');
  await new Promise((resolve) => s.once('data', resolve));
  t.is(s.bytesRead, 5);
  t.is(s.bytesWritten, 4);
  // resetAndDestroy: RST, not SHUTDOWN; the counters survive the close.
  const hostClosed = new Promise<void>((resolve) => hostSide!.once('close', () => resolve()));
  s.resetAndDestroy();
  await hostClosed;
  t.is(s.bytesWritten, 4);
  t.is(s.vsockState, 'CLOSED');
  await until(() => driver.connectionCount === 0, 'connection forgotten');
  t.is(driver.stats.rstSent, 1);
});
