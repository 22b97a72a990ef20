// Our TypeScript driver's SEQPACKET sockets (VsockSeqpacketSocket) and sibling routing,
// in-process: two guests, each our driver on its own VsockDevice, the devices in one
// sibling group. One write is one message, whatever its size against the 4 KiB..64 KiB
// packets and rx buffers; writes queued together stay separate messages; a message
// larger than the peer's buf_alloc fails with EMSGSIZE; stream and SEQPACKET listeners
// refuse the other type; a driver on a device without the feature refuses to make one;
// a paused reader holds whole messages against credit, never past buf_alloc.
import test from 'ava';
import { createHash } from 'node:crypto';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import type { VsockMuxer } from '../drivers/virtio-vsock/device/muxer.js';
import { SiblingRouter } from '../drivers/virtio-vsock/device/sibling-router.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver, VsockSeqpacketSocket, type VsockSocket } from '../drivers/virtio-vsock/index.js';

interface Guest {
  device: VsockDevice;
  driver: VsockDriver;
  transport: InProcessTransport;
}

async function guests(opts: { seqpacket?: boolean; bufAlloc?: number } = {}): Promise<{ a: Guest; b: Guest; stop: () => Promise<void> }> {
  const router = new SiblingRouter<VsockMuxer>();
  const make = async (cid: number): Promise<Guest> => {
    const device = new VsockDevice({ guestCid: cid, router, groups: ['g'], seqpacket: opts.seqpacket ?? true });
    const transport = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
    const driver = await VsockDriver.start(transport, { connectTimeoutMs: 300_000, ...(opts.bufAlloc ? { bufAlloc: opts.bufAlloc } : {}) });
    return { device, driver, transport };
  };
  const a = await make(3);
  const b = await make(4);
  return {
    a,
    b,
    stop: async () => {
      for (const g of [a, b]) {
        g.driver.close();
        await g.transport.close();
        g.device.dispose();
      }
    },
  };
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed * 131 + (i >> 9)) & 0xff;
  return b;
}

const connected = (s: VsockSocket): Promise<void> => new Promise((resolve, reject) => s.once('connect', resolve).once('error', reject));

/** Reads `n` messages (each 'data' chunk is one). */
function messages(s: VsockSocket, n: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const onData = (m: Buffer): void => {
      got.push(m);
      if (got.length === n) {
        s.off('data', onData);
        resolve(got);
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

test('SEQPACKET between two of our drivers through sibling routing: every message arrives whole and alone, sizes 1 B .. 200 KiB, both ways', async (t) => {
  const { a, b, stop } = await guests();
  try {
    t.true(a.driver.seqpacket);
    const sizes = [1, 100, 4096, 4097, 65536, 65537, 200 * 1024, 3, 0x10000 - 44];
    const serverGot = new Promise<{ socket: VsockSocket; msgs: Buffer[] }>((resolve) => {
      b.driver.createServer({ type: 'seqpacket' }, (socket) => {
        t.true(socket instanceof VsockSeqpacketSocket);
        void messages(socket, sizes.length).then((msgs) => resolve({ socket, msgs }));
      }).listen(900);
    });
    const c = a.driver.connect({ cid: 4, port: 900, type: 'seqpacket' });
    await connected(c);
    // All written at once: Node hands several to _writev; each must stay its own message.
    for (const [i, n] of sizes.entries()) c.write(pattern(n, i));
    const { socket, msgs } = await serverGot;
    t.deepEqual(msgs.map((m) => m.length), sizes);
    msgs.forEach((m, i) => t.is(sha(m), sha(pattern(sizes[i]!, i)), `message ${i}`));
    // And back.
    const back = messages(c, 3);
    socket.write(Buffer.from('one'));
    socket.write(pattern(70_000, 9));
    socket.write(Buffer.from('three'));
    const r = await back;
    t.deepEqual(r.map((m) => m.length), [3, 70_000, 5]);
    t.is(sha(r[1]!), sha(pattern(70_000, 9)));
    t.true(a.device.stats.siblingPackets > 0);
    c.destroy();
  } finally {
    await stop();
  }
});

test('stream sockets between two of our drivers through sibling routing: 4 MiB each way, SHA-256 intact, half-close', async (t) => {
  const { a, b, stop } = await guests();
  try {
    b.driver.createServer({ allowHalfOpen: true }, (s) => s.pipe(s)).listen(901);
    const c = a.driver.connect({ cid: 4, port: 901, allowHalfOpen: true });
    await connected(c);
    const data = pattern(4 << 20, 5);
    const got = new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      c.on('data', (d: Buffer) => parts.push(d));
      c.once('end', () => resolve(Buffer.concat(parts)));
    });
    c.end(data);
    t.is(sha(await got), sha(data));
  } finally {
    await stop();
  }
});

test('a message larger than the peer\'s buf_alloc fails with EMSGSIZE; a stream connect to a SEQPACKET listener and the reverse are refused', async (t) => {
  const { a, b, stop } = await guests({ bufAlloc: 64 * 1024 });
  try {
    b.driver.createServer({ type: 'seqpacket' }, () => {}).listen(902);
    b.driver.createServer(() => {}).listen(903);
    const c = a.driver.connect({ cid: 4, port: 902, type: 'seqpacket' });
    await connected(c);
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => {
      c.once('error', resolve);
      c.write(pattern(64 * 1024 + 1, 1));
    });
    t.is(err.code, 'EMSGSIZE');
    const wrong1 = a.driver.connect({ cid: 4, port: 902 });
    t.is((await connected(wrong1).catch((e: NodeJS.ErrnoException) => e))?.code, 'ECONNREFUSED');
    const wrong2 = a.driver.connect({ cid: 4, port: 903, type: 'seqpacket' });
    t.is((await connected(wrong2).catch((e: NodeJS.ErrnoException) => e))?.code, 'ECONNREFUSED');
  } finally {
    await stop();
  }
});

test('a device without VIRTIO_VSOCK_F_SEQPACKET: the driver does not negotiate it and refuses SEQPACKET sockets (ESOCKTNOSUPPORT)', async (t) => {
  const { a, stop } = await guests({ seqpacket: false });
  try {
    t.false(a.driver.seqpacket);
    t.false(a.device.seqpacket);
    t.throws(() => a.driver.connect({ cid: 4, port: 1, type: 'seqpacket' }), { code: 'ESOCKTNOSUPPORT' });
    t.throws(() => a.driver.createServer({ type: 'seqpacket' }), { code: 'ESOCKTNOSUPPORT' });
  } finally {
    await stop();
  }
});

test('SEQPACKET over the raw connection: a paused reader holds whole messages against credit (never past buf_alloc), corked writes stay one message each, every message arrives once resumed', async (t) => {
  const bufAlloc = 128 * 1024;
  const { a, b, stop } = await guests({ bufAlloc });
  try {
    const accepted = new Promise<VsockSocket>((resolve) => b.driver.createServer({ type: 'seqpacket' }, resolve).listen(904));
    const c = a.driver.connect({ cid: 4, port: 904, type: 'seqpacket' });
    await connected(c);
    const server = await accepted;
    server.pause();
    // 40 messages of 10 KiB: more than buf_alloc, so the sender must wait for credit.
    const sizes = Array.from({ length: 40 }, (_, i) => 10 * 1024 + i);
    let written = 0;
    c.cork();
    for (const [i, n] of sizes.entries()) c.write(pattern(n, i), () => written++);
    c.uncork();
    for (let i = 0; i < 200 && b.driver.stats.maxRxUnconsumed < bufAlloc - 20 * 1024; i++) await new Promise((r) => setImmediate(r));
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    t.true(written < sizes.length, `the sender waits for credit (${written} written)`);
    t.true(b.driver.stats.maxRxUnconsumed <= bufAlloc, `unconsumed ${b.driver.stats.maxRxUnconsumed}`);
    t.is(b.driver.stats.rxCreditOverruns, 0);
    const got = messages(server, sizes.length);
    server.resume();
    const msgs = await got;
    t.deepEqual(msgs.map((m) => m.length), sizes);
    msgs.forEach((m, i) => t.is(sha(m), sha(pattern(sizes[i]!, i)), `message ${i}`));
    t.is(server.bytesRead, sizes.reduce((x, y) => x + y, 0));
    c.destroy();
  } finally {
    await stop();
  }
});
