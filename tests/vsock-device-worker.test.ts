// The vsock device in a worker thread (worker-device.ts) with its host apps, driven by
// the raw test driver over the in-process transport.
import test from 'ava';
import { createHash } from 'node:crypto';
import type { HostAppReport } from '../drivers/virtio-vsock/host/apps.js';
import { PseudoRandomBytes } from '../drivers/virtio-vsock/host/apps.js';
import type { WorkerDeviceStats } from '../drivers/virtio-vsock/device/worker-device.js';
import { CONN_BUF_ALLOC_BYTES, HOST_SOCKET_HIGH_WATER_MARK_BYTES } from '../drivers/virtio-vsock/device/constants.js';
import { RawStream, VsockRawDriver } from './support/vsock-raw-driver.js';

const deviceModule = new URL('../drivers/virtio-vsock/device/worker-device.js', import.meta.url);
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Harness {
  drv: VsockRawDriver;
  reports: HostAppReport[];
  request<T>(msg: object): Promise<T>;
  nextReport(pred: (r: HostAppReport) => boolean): Promise<HostAppReport>;
  close(): Promise<void>;
}

async function harness(apps: unknown[]): Promise<Harness> {
  const drv = await VsockRawDriver.worker({ module: deviceModule, options: { guestCid: 9, apps } }, { rxBufferBytes: 44 + 16 * 1024, memoryBytes: 32 << 20 });
  const reports: HostAppReport[] = [];
  const replies = new Map<number, (m: unknown) => void>();
  let waiters: Array<() => void> = [];
  drv.transport.on('device-message', (m: { id?: number; app?: string }) => {
    if (m.app !== undefined) {
      reports.push(m as HostAppReport);
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    } else if (m.id !== undefined) {
      replies.get(m.id)?.(m);
      replies.delete(m.id);
    }
  });
  let nextId = 1;
  return {
    drv,
    reports,
    request: <T>(msg: object) =>
      new Promise<T>((resolve) => {
        const id = nextId++;
        replies.set(id, resolve as (m: unknown) => void);
        drv.transport.postToDevice({ ...msg, id });
      }),
    nextReport: async (pred) => {
      for (;;) {
        const r = reports.find(pred);
        if (r) return r;
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
    close: () => drv.close(),
  };
}

test('worker device: echo app returns every byte, reports digests', async (t) => {
  const h = await harness([{ kind: 'echo', port: 7 }]);
  try {
    const g = new RawStream(h.drv, 1000, 7);
    await g.connect();
    const data = new PseudoRandomBytes(1).fill(Buffer.alloc(1024 * 1024 + 3));
    await g.write(data);
    g.end();
    const back = await g.readAll();
    t.is(sha(back), sha(data));
    t.is(g.windowViolations, 0);
    // The echo app ended its side; the guest closes: the connection is done.
    const r = await h.nextReport((x) => x.app === 'echo');
    t.is(r.received, data.length);
    t.is(r.sent, data.length);
    t.is(r.sha256Received, sha(data));
    t.is(r.sha256Sent, sha(data));
  } finally {
    await h.close();
  }
});

test('worker device: 2000 sequential ping-pongs (no kick or interrupt lost across threads)', async (t) => {
  const h = await harness([{ kind: 'echo', port: 7 }]);
  try {
    const g = new RawStream(h.drv, 1500, 7);
    await g.connect();
    let expected = 0;
    for (let i = 0; i < 2000; i++) {
      const msg = Buffer.from(`ping ${i} `.padEnd(100, '.'));
      await g.write(msg);
      expected += msg.length;
      await h.drv.until(() => g.rxCnt >= expected);
    }
    t.is(g.rxCnt, expected);
    t.is(g.windowViolations, 0);
    g.end();
    await g.readAll();
  } finally {
    await h.close();
  }
});

test('worker device: source app writes N pseudorandom bytes then ends', async (t) => {
  const h = await harness([{ kind: 'source', port: 19, bytes: 700_000 }]);
  try {
    const g = new RawStream(h.drv, 1001, 19);
    await g.connect();
    const got = await g.readAll();
    t.is(got.length, 700_000);
    g.end();
    const r = await h.nextReport((x) => x.app === 'source');
    t.is(r.sent, 700_000);
    t.is(r.sha256Sent, sha(got));
  } finally {
    await h.close();
  }
});

test('worker device: host connects to a guest port and runs an app; refused connect reports ECONNREFUSED', async (t) => {
  const h = await harness([]);
  try {
    const g = new RawStream(h.drv, 5555, -1);
    const accepting = g.accept();
    const reply = h.request<{ ok: boolean }>({ cmd: 'connect', port: 5555, kind: 'sink' });
    await accepting;
    t.true((await reply).ok);
    const data = new PseudoRandomBytes(3).fill(Buffer.alloc(300_000));
    await g.write(data);
    g.end();
    await g.readAll(); // the sink ends its side when the guest ends
    const r = await h.nextReport((x) => x.app === 'sink');
    t.is(r.received, data.length);
    t.is(r.sha256Received, sha(data));
    // Nobody accepts on 5556: the raw driver leaves the REQUEST unanswered, so answer RST.
    const refused = h.request<{ ok: boolean; code?: string }>({ cmd: 'connect', port: 5556, kind: 'echo' });
    const req = await h.drv.next((p) => p.header.op === 1 && p.header.dstPort === 5556);
    h.drv.send({ srcPort: 5556, dstPort: req.header.srcPort, op: 3 });
    t.deepEqual(await refused, { id: 2, ok: false, code: 'ECONNREFUSED' });
  } finally {
    await h.close();
  }
});

test('worker device: a slow sink keeps host memory bounded while an echo connection flows', async (t) => {
  const h = await harness([
    { kind: 'sink', port: 9, readDelayMs: 2 },
    { kind: 'echo', port: 7 },
  ]);
  try {
    const slow = new RawStream(h.drv, 2000, 9);
    const fast = new RawStream(h.drv, 2001, 7);
    await slow.connect();
    await fast.connect();
    const slowData = new PseudoRandomBytes(5).fill(Buffer.alloc(3 * 1024 * 1024));
    const slowDone = slow.write(slowData).then(() => slow.end());
    let maxBuffered = 0;
    const echoData = new PseudoRandomBytes(6).fill(Buffer.alloc(512 * 1024));
    for (let i = 0; i < 8; i++) {
      const piece = echoData.subarray(i * 64 * 1024, (i + 1) * 64 * 1024);
      await fast.write(piece);
      const s = await h.request<{ stats: WorkerDeviceStats }>({ cmd: 'stats' });
      maxBuffered = Math.max(maxBuffered, s.stats.hostBufferedBytes);
    }
    fast.end();
    t.is(sha(await fast.readAll()), sha(echoData));
    await slowDone;
    await slow.readAll();
    const r = await h.nextReport((x) => x.app === 'sink');
    t.is(r.sha256Received, sha(slowData));
    const bound = 2 * CONN_BUF_ALLOC_BYTES + 8 * HOST_SOCKET_HIGH_WATER_MARK_BYTES;
    t.true(maxBuffered <= bound, `host side buffered ${maxBuffered} bytes (bound ${bound})`);
    const s = await h.request<{ stats: WorkerDeviceStats }>({ cmd: 'stats' });
    t.is(s.stats.dropped.creditViolation, 0);
  } finally {
    await h.close();
  }
});

test('worker device: transport-reset command sends the event', async (t) => {
  const h = await harness([{ kind: 'echo', port: 7 }]);
  try {
    const g = new RawStream(h.drv, 3000, 7);
    await g.connect();
    h.drv.transport.postToDevice({ cmd: 'transport-reset' });
    await h.drv.until(() => h.drv.events.length === 1);
    t.deepEqual(h.drv.events, [0]);
    const r = await h.nextReport((x) => x.app === 'echo');
    t.is(r.received, 0);
    const s = await h.request<{ stats: WorkerDeviceStats }>({ cmd: 'stats' });
    t.is(s.stats.connections, 0);
    t.is(s.stats.eventsSent, 1);
  } finally {
    await h.close();
  }
});
