// The driver against the device emulator in a worker thread (real concurrency over
// shared memory, packed rings unless a test asks for split ones): bulk transfers with
// SHA-256 on both ends in each transmit mode and each ring layout, many
// connections at once, a slow reader held back by credit, refusal, close order,
// TRANSPORT_RESET, host-initiated connections.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { VsockDriver, type TxMode, type VsockDriverOptions, type VsockSocket } from '../drivers/virtio-vsock/index.js';

const DEVICE_MODULE = new URL('../drivers/virtio-vsock/device/worker-device.js', import.meta.url);
const GUEST_CID = 3;
const ECHO = 7000;
const SINK = 7001;
const SLOW_SINK = 7002;

interface AppReport {
  app: string;
  port: number;
  received: number;
  sent: number;
  sha256Received: string;
  sha256Sent: string;
}

interface Guest {
  transport: InProcessTransport;
  driver: VsockDriver;
  reports: AppReport[];
  request(msg: Record<string, unknown>): Promise<Record<string, unknown>>;
  /** Resolves with the next report of `app` on `port` matching `pred`. */
  report(app: string, port: number, pred?: (r: AppReport) => boolean): Promise<AppReport>;
  stop(): Promise<void>;
}

let nextId = 1;

async function startGuest(opts: VsockDriverOptions = {}, slowReadDelayMs = 5): Promise<Guest> {
  const transport = await InProcessTransport.worker(
    {
      module: DEVICE_MODULE,
      options: {
        guestCid: GUEST_CID,
        apps: [
          { kind: 'echo', port: ECHO },
          { kind: 'sink', port: SINK },
          { kind: 'sink', port: SLOW_SINK, readDelayMs: slowReadDelayMs },
        ],
      },
    },
    { memoryBytes: 96 << 20 },
  );
  const reports: AppReport[] = [];
  const waiters: Array<{ app: string; port: number; pred: (r: AppReport) => boolean; resolve: (r: AppReport) => void }> = [];
  const replies = new Map<unknown, (m: Record<string, unknown>) => void>();
  transport.on('device-message', (m: Record<string, unknown>) => {
    if (m && 'id' in m && replies.has(m.id)) {
      const r = replies.get(m.id)!;
      replies.delete(m.id);
      r(m);
      return;
    }
    if (m && typeof m.app === 'string') {
      const rep = m as unknown as AppReport;
      const i = waiters.findIndex((w) => w.app === rep.app && w.port === rep.port && w.pred(rep));
      if (i >= 0) waiters.splice(i, 1)[0]!.resolve(rep);
      else reports.push(rep);
    }
  });
  let driver: VsockDriver;
  try {
    // No clock in these tests: a loaded machine may take seconds to answer a REQUEST.
    driver = await VsockDriver.start(transport, { connectTimeoutMs: 300_000, ...opts });
  } catch (e) {
    await transport.close();
    throw e;
  }
  return {
    transport,
    driver,
    reports,
    request: (msg) =>
      new Promise((resolve) => {
        const id = nextId++;
        replies.set(id, resolve);
        transport.postToDevice({ ...msg, id });
      }),
    report: (app, port, pred = () => true) => {
      const i = reports.findIndex((r) => r.app === app && r.port === port && pred(r));
      if (i >= 0) return Promise.resolve(reports.splice(i, 1)[0]!);
      return new Promise((resolve) => waiters.push({ app, port, pred, resolve }));
    },
    stop: async () => {
      driver.close();
      await transport.close();
    },
  };
}

/** Fills b with a pattern unique to (stream, offset): a reused buffer always changes. */
function fillPattern(b: Uint8Array, streamOffset: number, seed: number): void {
  const words = new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
  const base = streamOffset >>> 2;
  for (let i = 0; i < words.length; i++) words[i] = Math.imul(base + i + seed, 2654435761) >>> 0;
  for (let i = words.length * 4; i < b.byteLength; i++) b[i] = i & 0xff;
}

/**
 * Writes `total` bytes in `size` writes from a ring of buffers (DMA buffers for zero
 * copy), each refilled with new content only after its write callback: if a callback
 * came before the device was done with the bytes, the peer's hash would differ.
 */
async function writeStream(driver: VsockDriver, sock: VsockSocket, mode: TxMode, total: number, size: number, ringCount: number, seed: number): Promise<string> {
  const hash = createHash('sha256');
  const ring: Buffer[] = [];
  for (let i = 0; i < ringCount; i++) ring.push(mode === 'zero-copy' || mode === 'auto' ? driver.allocBuffer(size) : Buffer.alloc(size));
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      const free = ring.slice();
      let off = 0;
      const pump = (): void => {
        while (off < total && free.length > 0) {
          const b = free.pop()!;
          const n = Math.min(size, total - off);
          const view = n === size ? b : b.subarray(0, n);
          fillPattern(view, off, seed);
          hash.update(view);
          off += n;
          sock.write(view, (err) => {
            if (err) return reject(err);
            free.push(b);
            pump();
          });
        }
        if (off >= total && free.length === ring.length) {
          sock.off('error', reject);
          resolve();
        }
      };
      pump();
    });
  } finally {
    if (mode === 'zero-copy' || mode === 'auto') for (const b of ring) driver.freeBuffer(b);
  }
  return hash.digest('hex');
}

function hashReadable(sock: VsockSocket): Promise<{ bytes: number; sha: string }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    sock.on('data', (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    sock.once('end', () => resolve({ bytes, sha: h.digest('hex') }));
    sock.once('error', reject);
  });
}

/** Polls cond (the device runs in another thread); gives up only after minutes, as a hang guard. */
async function eventually(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 60_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
}

async function connect(driver: VsockDriver, port: number): Promise<VsockSocket> {
  const s = driver.connect({ cid: 2, port });
  await once(s, 'connect');
  return s;
}

for (const mode of ['two-copy', 'single-copy', 'zero-copy'] as const) {
  test(`${mode}: 64 MiB each way through one echo connection, SHA-256 equal on both ends`, async (t) => {
    const g = await startGuest({ txMode: mode });
    try {
      const total = 64 << 20;
      const sock = await connect(g.driver, ECHO);
      const back = hashReadable(sock);
      const closed = once(sock, 'close');
      const sentSha = await writeStream(g.driver, sock, mode, total, 60_000, 24, 11);
      sock.end();
      const got = await back;
      await closed;
      const rep = await g.report('echo', ECHO);
      t.is(got.bytes, total);
      t.is(got.sha, sentSha, 'what came back is what was sent');
      t.is(rep.received, total);
      t.is(rep.sha256Received, sentSha, 'the host received exactly what the guest sent');
      t.is(rep.sha256Sent, sentSha);
      const s = g.driver.stats;
      if (mode === 'zero-copy') {
        t.is(s.txZeroCopyBytes, total);
        t.is(s.txCopiedBytes, 0);
      } else {
        t.is(s.txZeroCopyBytes, 0);
        t.is(s.txCopiedBytes, mode === 'two-copy' ? 2 * total : total);
        t.is(s.txPacketObjects > 0, mode === 'two-copy');
      }
      t.is(s.rxBytes, total);
    } finally {
      await g.stop();
    }
  });
}

test('200 connections at once, each echoing 256 KiB, contents checked', async (t) => {
  const g = await startGuest({ txMode: 'auto' });
  try {
    const n = 200;
    const size = 256 * 1024;
    const results = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const data = Buffer.allocUnsafe(size);
        fillPattern(data, 0, 1000 + i);
        const sock = g.driver.connect({ cid: 2, port: ECHO });
        const parts: Buffer[] = [];
        sock.on('data', (d: Buffer) => parts.push(d));
        const closed = once(sock, 'close');
        // Several writes per connection, so streams interleave on the rings.
        for (let off = 0; off < size; off += 32 * 1024) sock.write(data.subarray(off, off + 32 * 1024));
        sock.end();
        await closed;
        return Buffer.concat(parts).equals(data);
      }),
    );
    t.is(results.filter(Boolean).length, n);
    t.true(g.driver.stats.maxConnections >= 100, `connections overlapped (max ${g.driver.stats.maxConnections})`);
    t.is(g.driver.connectionCount, 0);
  } finally {
    await g.stop();
  }
});

test('slow reader: the writer is held back by credit, no byte lost, memory bounded', async (t) => {
  const g = await startGuest({ txMode: 'single-copy' }, 2);
  try {
    const total = 8 << 20;
    const sock = await connect(g.driver, SLOW_SINK);
    let maxWritable = 0;
    let maxHostBuffered = 0;
    let samples = 0;
    const sample = (): void => {
      void g.request({ cmd: 'stats' }).then((m) => {
        samples++;
        maxHostBuffered = Math.max(maxHostBuffered, Number((m.stats as { hostBufferedBytes: number }).hostBufferedBytes));
      });
    };
    const sentSha = await new Promise<string>((resolve, reject) => {
      // A writer that respects backpressure: write until write() says false, then wait for 'drain'.
      const h = createHash('sha256');
      let off = 0;
      sock.once('error', reject);
      const step = (): void => {
        while (off < total) {
          const b = Buffer.allocUnsafe(64 * 1024);
          fillPattern(b, off, 5);
          h.update(b);
          off += b.length;
          const more = sock.write(b);
          maxWritable = Math.max(maxWritable, sock.writableLength);
          if (!more) {
            sample();
            sock.once('drain', step);
            return;
          }
        }
        resolve(h.digest('hex'));
      };
      step();
    });
    sock.end();
    const rep = await g.report('sink', SLOW_SINK);
    t.is(rep.received, total);
    t.is(rep.sha256Received, sentSha);
    const s = g.driver.stats;
    t.true(s.txCreditStalls > 0, 'the writer waited for credit');
    // Driver side: at most one write buffered beyond the stream's high-water mark.
    t.true(maxWritable <= sock.writableHighWaterMark + 64 * 1024, `writable buffer ${maxWritable}`);
    // Device side, sampled while the writer waited: the host held at most the credit it
    // grants (256 KiB) plus its socket's high-water mark, never the stream.
    await g.request({ cmd: 'stats' });
    t.true(samples > 10);
    t.true(maxHostBuffered <= 512 * 1024, `host buffered at most ${maxHostBuffered} bytes`);
    // And the driver never held received bytes for this (send-only) connection.
    t.is(s.maxRxUnconsumed, 0);
  } finally {
    await g.stop();
  }
});

test('connect to a port nobody listens on: ECONNREFUSED', async (t) => {
  const g = await startGuest();
  try {
    const sock = g.driver.connect({ cid: 2, port: 4242 });
    const [err] = (await once(sock, 'error')) as [NodeJS.ErrnoException];
    t.is(err.code, 'ECONNREFUSED');
    t.is(g.driver.connectionCount, 0);
  } finally {
    await g.stop();
  }
});

async function closeOrder(t: ExecutionContext, g: Guest): Promise<void> {
  const sock = await connect(g.driver, ECHO);
  const events: string[] = [];
  for (const e of ['end', 'finish', 'close']) sock.on(e, () => events.push(e));
  sock.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString()));
  sock.end('half-closed, still answered');
  await once(sock, 'close');
  t.is(got, 'half-closed, still answered');
  t.deepEqual(events, ['finish', 'end', 'close']);
}

test('half-close: end() then the echo still answers; finish, end, close in order', async (t) => {
  const g = await startGuest();
  try {
    await closeOrder(t, g);
    await eventually(() => g.driver.connectionCount === 0);
    t.is(g.driver.connectionCount, 0, 'the close handshake completed');
  } finally {
    await g.stop();
  }
});

test('TRANSPORT_RESET from the device: ECONNRESET on every socket, then new connections work', async (t) => {
  const g = await startGuest();
  try {
    const socks = await Promise.all([connect(g.driver, ECHO), connect(g.driver, ECHO), connect(g.driver, SINK)]);
    const errs = socks.map((s) => once(s, 'error') as Promise<[NodeJS.ErrnoException]>);
    g.transport.postToDevice({ cmd: 'transport-reset' });
    const codes = (await Promise.all(errs)).map(([e]) => e.code);
    t.deepEqual(codes, ['ECONNRESET', 'ECONNRESET', 'ECONNRESET']);
    t.is(g.driver.stats.transportResets, 1);
    await closeOrder(t, g);
  } finally {
    await g.stop();
  }
});

test('host-initiated connections: a source sends to a guest server, the guest checks SHA-256', async (t) => {
  const g = await startGuest();
  try {
    let resolveGot: (v: { bytes: number; sha: string }) => void = () => {};
    const got = new Promise<{ bytes: number; sha: string }>((r) => (resolveGot = r));
    const server = g.driver.createServer((s) => {
      void hashReadable(s).then(resolveGot);
      s.end();
    });
    server.listen(8000);
    await once(server, 'listening');
    const reply = await g.request({ cmd: 'connect', port: 8000, kind: 'source', bytes: 5 << 20 });
    t.true(reply.ok as boolean, JSON.stringify(reply));
    const rep = await g.report('source', 8000);
    const { bytes, sha } = await got;
    t.is(bytes, 5 << 20);
    t.is(rep.sent, 5 << 20);
    t.is(sha, rep.sha256Sent);
    const refused = await g.request({ cmd: 'connect', port: 8001, kind: 'sink' });
    t.false(refused.ok as boolean);
    t.is(refused.code, 'ECONNREFUSED');
    server.close();
  } finally {
    await g.stop();
  }
});

test('tiny rings and pools: 50 connections share 2 tx slots and 16 descriptors, nothing lost', async (t) => {
  const g = await startGuest({ txMode: 'single-copy', txSlots: 2, queueSize: 16, rxBuffers: 8 });
  try {
    const n = 50;
    const size = 200 * 1024;
    const ok = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const data = Buffer.allocUnsafe(size);
        fillPattern(data, 0, 7000 + i);
        const sock = g.driver.connect({ cid: 2, port: ECHO });
        const parts: Buffer[] = [];
        sock.on('data', (d: Buffer) => parts.push(d));
        const closed = once(sock, 'close');
        sock.end(data);
        await closed;
        return Buffer.concat(parts).equals(data);
      }),
    );
    t.is(ok.filter(Boolean).length, n);
    t.true(g.driver.stats.txRingStalls > 0, 'connections waited for tx slots');
  } finally {
    await g.stop();
  }
});

test('zero copy with DMA buffers split across many small writes and mixed with plain buffers (auto)', async (t) => {
  const g = await startGuest({ txMode: 'auto' });
  try {
    const sock = await connect(g.driver, ECHO);
    const back = hashReadable(sock);
    const sent = createHash('sha256');
    const dma = g.driver.allocBuffer(1 << 20);
    fillPattern(dma, 0, 99);
    const plain = Buffer.allocUnsafe(1 << 20);
    fillPattern(plain, 1 << 20, 99);
    // Odd-sized slices, alternating DMA and plain memory.
    const pieces: Buffer[] = [];
    for (let off = 0, k = 1; off < 1 << 20; k++) {
      const n = Math.min(((k * 7919) % 30000) + 1, (1 << 20) - off);
      pieces.push(dma.subarray(off, off + n), plain.subarray(off, off + n));
      off += n;
    }
    await new Promise<void>((resolve, reject) => {
      let left = pieces.length;
      for (const p of pieces) {
        sent.update(p);
        sock.write(p, (err) => (err ? reject(err) : --left === 0 && resolve()));
      }
    });
    sock.end();
    const got = await back;
    t.is(got.bytes, 2 << 20);
    t.is(got.sha, sent.digest('hex'));
    t.is(g.driver.stats.txZeroCopyBytes, 1 << 20);
    t.is(g.driver.stats.txCopiedBytes, 1 << 20);
    g.driver.freeBuffer(dma);
  } finally {
    await g.stop();
  }
});

for (const ring of ['split', 'packed'] as const) {
  test(`${ring} ring (asked for) across threads: 16 MiB each way in 4 connections at once, auto mode, SHA-256 equal`, async (t) => {
    const g = await startGuest({ ring });
    try {
      t.is(g.driver.ringLayout, ring);
      const total = 16 << 20;
      await Promise.all(
        [0, 1, 2, 3].map(async (k) => {
          const sock = await connect(g.driver, ECHO);
          const back = hashReadable(sock);
          const sentSha = await writeStream(g.driver, sock, 'auto', total / 4, 50_000 + 1000 * k, 12, 31 + k);
          sock.end();
          const got = await back;
          t.is(got.bytes, total / 4);
          t.is(got.sha, sentSha);
        }),
      );
    } finally {
      await g.stop();
    }
  });
}

test('the packed ring is negotiated when the device offers it (the default)', async (t) => {
  const g = await startGuest();
  try {
    t.is(g.driver.ringLayout, 'packed');
  } finally {
    await g.stop();
  }
});

for (const ring of ['split', 'packed'] as const) {
  test(`${ring} ring without EVENT_IDX (flags only) across threads: 16 MiB each way, zero copy, SHA-256 equal`, async (t) => {
    const g = await startGuest({ txMode: 'zero-copy', eventIdx: false, ring });
    try {
      t.false(g.driver.eventIdx);
      t.is(g.driver.ringLayout, ring);
      const total = 16 << 20;
      const sock = await connect(g.driver, ECHO);
      const back = hashReadable(sock);
      const sentSha = await writeStream(g.driver, sock, 'zero-copy', total, 40_000, 16, 21);
      sock.end();
      const got = await back;
      t.is(got.bytes, total);
      t.is(got.sha, sentSha);
      t.is((await g.report('echo', ECHO)).sha256Received, sentSha);
    } finally {
      await g.stop();
    }
  });
}
