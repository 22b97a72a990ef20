// VirtioFsSiteFiles' open-handle cache on the real driver and the in-process device
// (same thread), with a log of the FUSE opcodes the device served: a file requested
// again is read without OPEN and RELEASE, concurrent requests share one handle, a file
// replaced or modified is opened again once the FUSE server's metadata timeout says
// so, eviction and close() release each handle exactly once and never under a read,
// a failing RELEASE changes nothing for the requests, and openHandleCache 0 is the old
// OPEN/RELEASE per request. Most go through the webserver (vsock device's host API
// -> vsock driver -> webserver -> VirtioFsSiteFiles -> virtio-fs driver -> device).
import test, { type ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import type { DescriptorChain } from '../kernel/virtqueue/device-queue.js';
import { VirtioFsDevice } from '../drivers/virtio-fs/device/virtio-fs-device.js';
import { VirtioFsDriver, type VirtioFsFileHandle } from '../drivers/virtio-fs/driver/index.js';
import { FuseOpcode as Op } from '../drivers/virtio-fs/fuse-protocol.js';
import { writeU64 } from '../drivers/virtio-fs/fuse-codec.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';
import { HttpResponseReader, type RawHttpResponse } from '../appliance/webserver/client/http-response-reader.js';
import { runWebserver } from '../appliance/webserver/run-guest.js';
import { VirtioFsSiteFiles, type VirtioFsSiteFilesOptions, type VirtioFsSiteFs } from '../appliance/webserver/files/virtio-fs-site-files.js';
import { vsockBufferAllocator, vsockListenRaw } from '../appliance/webserver/listen/vsock-adapters.js';

const IN_HEADER = 40;
const OUT_HEADER = 16;
const BIG = 133 * 1024;

let root = '';
const bytes = (seed: number, n: number): Buffer => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return b;
};

test.before(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'webserver-virtiofs-handles-'));
  fs.writeFileSync(join(root, 'big.bin'), bytes(1, BIG));
  for (const n of ['a', 'b', 'c', 'd']) fs.writeFileSync(join(root, `${n}.txt`), `file ${n}\n`);
});

test.after.always(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

interface Served {
  op: number;
  /** The file handle: OPEN's reply, READ's and RELEASE's request. */
  fh: number;
  error: number;
}

/** The device, logging what it served; LOOKUP/GETATTR validity in ms; RELEASE can be made to fail. */
class LoggingFsDevice extends VirtioFsDevice {
  readonly served: Served[] = [];
  validMs = 3_600_000;
  failRelease = false;

  override serve(queueIndex: number, chain: DescriptorChain): number {
    const req = Buffer.alloc(Math.min(chain.readableLength, 4096));
    chain.read(0, req, 0, req.length);
    const op = req.length >= 8 ? req.readUInt32LE(4) : -1;
    let n = super.serve(queueIndex, chain);
    if (n < OUT_HEADER || chain.writableCount === 0) {
      this.served.push({ op, fh: -1, error: 0 });
      return n;
    }
    const seg = chain.segment(chain.readableCount);
    const dv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
    let error = dv.getInt32(4, true);
    let fh = -1;
    if (op === Op.READ || op === Op.RELEASE) fh = Number(req.readBigUInt64LE(IN_HEADER));
    if (error === 0) {
      const sec = Math.floor(this.validMs / 1000);
      const nsec = (this.validMs % 1000) * 1e6;
      if (op === Op.OPEN) fh = Number(dv.getBigUint64(OUT_HEADER, true));
      else if (op === Op.LOOKUP) {
        writeU64(dv, OUT_HEADER + 16, sec);
        writeU64(dv, OUT_HEADER + 24, sec);
        dv.setUint32(OUT_HEADER + 32, nsec, true);
        dv.setUint32(OUT_HEADER + 36, nsec, true);
      } else if (op === Op.GETATTR) {
        writeU64(dv, OUT_HEADER, sec);
        dv.setUint32(OUT_HEADER + 8, nsec, true);
      } else if (op === Op.RELEASE && this.failRelease) {
        // The device did close it; the driver is told it failed.
        error = -5; // EIO
        dv.setInt32(4, error, true);
        n = OUT_HEADER;
      }
    }
    this.served.push({ op, fh, error });
    return n;
  }

  count(op: number, from = 0): number {
    return this.served.slice(from).filter((s) => s.op === op).length;
  }

  ops(from = 0): number[] {
    return this.served.slice(from).map((s) => s.op);
  }
}

const until = async (cond: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
};

async function withFs(t: ExecutionContext): Promise<{ dev: LoggingFsDevice; vfs: VirtioFsDriver }> {
  const dev = new LoggingFsDevice({ root, tag: 'handles' });
  const transport = InProcessTransport.sameThread(dev, { memoryBytes: 16 << 20 });
  const vfs = await VirtioFsDriver.start(transport);
  t.teardown(async () => {
    try {
      await vfs.close();
    } finally {
      await transport.close();
    }
  });
  return { dev, vfs };
}

interface Site {
  dev: LoggingFsDevice;
  vfs: VirtioFsDriver;
  files: VirtioFsSiteFiles;
  vdev: VsockDevice;
  /** GET on a connection of its own (one per `conn` number). */
  get(path: string, conn?: number): Promise<RawHttpResponse>;
}

async function site(t: ExecutionContext, opts: VirtioFsSiteFilesOptions & { loaned?: boolean } = {}): Promise<Site> {
  const { dev, vfs } = await withFs(t);
  const vdev = new VsockDevice({ guestCid: 3 });
  const vtr = InProcessTransport.sameThread(vdev, { memoryBytes: 32 << 20 });
  const vsock = await VsockDriver.start(vtr);
  t.teardown(async () => {
    vsock.close();
    await vtr.close();
  });
  const loanAllocator = opts.loaned ? { alloc: (n: number) => Buffer.alloc(n), free: () => {} } : undefined;
  const files = new VirtioFsSiteFiles(vfs, { ...opts, loanAllocator });
  const web = await runWebserver({ listenRaw: vsockListenRaw(vsock), files, port: 80, cache: false, bufferAllocator: vsockBufferAllocator(vsock) });
  t.teardown(() => web.close());
  const readers = new Map<number, Promise<HttpResponseReader>>();
  const get = async (path: string, conn = 0): Promise<RawHttpResponse> => {
    let r = readers.get(conn);
    if (r === undefined) {
      r = vdev.host.connect(80).then((s) => {
        t.teardown(() => s.destroy());
        return new HttpResponseReader(s);
      });
      readers.set(conn, r);
    }
    const reader = await r;
    reader.socket.write(`GET ${path} HTTP/1.1\r\nHost: g\r\n\r\n`);
    return reader.next();
  };
  return { dev, vfs, files, vdev, get };
}

const hostBytes = (name: string): Buffer => fs.readFileSync(join(root, name));

for (const loaned of [false, true]) {
  test(`a second request of the same file sends no OPEN and no RELEASE (${loaned ? 'loaned' : 'pooled'} reads)`, async (t) => {
    const s = await site(t, { loaned });
    for (const f of ['/big.bin', '/a.txt']) {
      const first = await s.get(f);
      t.true(first.body.equals(hostBytes(f)), f);
      t.is(s.dev.count(Op.OPEN), f === '/big.bin' ? 1 : 2);
      const from = s.dev.served.length;
      for (let i = 0; i < 3; i++) {
        const again = await s.get(f);
        t.is(again.status, 200);
        t.true(again.body.equals(hostBytes(f)), f);
      }
      await new Promise((r) => setTimeout(r, 5)); // anything sent in the background
      t.true(
        s.dev.ops(from).every((op) => op === Op.READ),
        `${f}: only READs, got ${JSON.stringify(s.dev.ops(from))}`,
      );
    }
    t.is(s.dev.count(Op.RELEASE), 0);
    t.like(s.files.openHandleStats, { misses: 2, hits: 6, openHandles: 2, cached: 2, staleDrops: 0, evictions: 0 });
    t.is(s.dev.stats.openHandles, 2, 'the device holds the two cached handles');
  });
}

test('concurrent requests of one file share one open handle', async (t) => {
  const s = await site(t, { loaned: true });
  const all = await Promise.all([0, 1, 2, 3, 4, 5].map((c) => s.get('/big.bin', c)));
  for (const r of all) t.true(r.body.equals(hostBytes('big.bin')));
  t.is(s.dev.count(Op.OPEN), 1);
  t.is(s.dev.count(Op.RELEASE), 0);
  t.like(s.files.openHandleStats, { misses: 1, hits: 5, openHandles: 1 });
  // Every READ went through that one handle.
  const fh = s.dev.served.find((x) => x.op === Op.OPEN)!.fh;
  t.true(s.dev.served.filter((x) => x.op === Op.READ).every((x) => x.fh === fh));
});

test('opens while the first OPEN is in flight share it; reads at offsets on the shared handle are independent', async (t) => {
  const { dev, vfs } = await withFs(t);
  const files = new VirtioFsSiteFiles(vfs);
  await files.stat('/big.bin');
  const handles = await Promise.all([files.open('/big.bin'), files.open('/big.bin'), files.open('/big.bin')]);
  t.is(dev.count(Op.OPEN), 1);
  t.like(files.openHandleStats, { misses: 1, hits: 2 });
  const want = hostBytes('big.bin');
  const slices = await Promise.all(
    handles.flatMap((h, i) =>
      [0, 1, 2, 3].map(async (j) => {
        const pos = (i * 4 + j) * 9000 + 17;
        const buf = Buffer.alloc(8000);
        const n = await h.read(buf, 0, buf.length, pos);
        return buf.subarray(0, n).equals(want.subarray(pos, pos + 8000));
      }),
    ),
  );
  t.true(slices.every(Boolean));
  for (const h of handles) await h.close();
  // A request's handle refuses reads after its close() (the shared handle may be gone by then).
  await t.throwsAsync(handles[0]!.read(Buffer.alloc(4), 0, 4, 0), { code: 'EBADF' });
  await t.notThrowsAsync(handles[0]!.close(), 'close twice');
  t.is(dev.count(Op.RELEASE), 0);
  await files.close();
  t.is(dev.count(Op.RELEASE), 1);
  t.is(dev.stats.openHandles, 0);
});

test('a file replaced (new inode) after the metadata timeout is opened again and serves the new bytes', async (t) => {
  const s = await site(t);
  s.dev.validMs = 60;
  fs.writeFileSync(join(root, 'replaced.bin'), bytes(2, BIG));
  t.true((await s.get('/replaced.bin')).body.equals(bytes(2, BIG)));
  const oldFh = s.dev.served.find((x) => x.op === Op.OPEN)!.fh;
  fs.writeFileSync(join(root, 'replaced.bin.new'), bytes(3, BIG - 1000));
  fs.renameSync(join(root, 'replaced.bin.new'), join(root, 'replaced.bin'));
  await new Promise((r) => setTimeout(r, 100));
  const from = s.dev.served.length;
  const r = await s.get('/replaced.bin');
  t.true(r.body.equals(bytes(3, BIG - 1000)), 'the new file');
  t.is(s.dev.count(Op.OPEN, from), 1);
  await until(() => s.dev.count(Op.RELEASE) === 1, 'the old handle released');
  t.deepEqual(
    s.dev.served.filter((x) => x.op === Op.RELEASE).map((x) => x.fh),
    [oldFh],
  );
  t.like(s.files.openHandleStats, { staleDrops: 1, misses: 2, openHandles: 1 });
  t.is(s.dev.stats.openHandles, 1);
});

test('a file modified in place (size and mtime) after the metadata timeout is opened again and serves the new bytes', async (t) => {
  const s = await site(t);
  s.dev.validMs = 60;
  const p = join(root, 'modified.txt');
  fs.writeFileSync(p, 'before\n');
  t.is((await s.get('/modified.txt')).body.toString(), 'before\n');
  const ino = fs.statSync(p).ino;
  fs.writeFileSync(p, 'after, longer\n'); // same inode
  fs.utimesSync(p, new Date(), new Date(Date.now() + 5000));
  t.is(fs.statSync(p).ino, ino);
  await new Promise((r) => setTimeout(r, 100));
  const opens = s.dev.count(Op.OPEN);
  t.is((await s.get('/modified.txt')).body.toString(), 'after, longer\n');
  t.is(s.dev.count(Op.OPEN), opens + 1);
  await until(() => s.dev.count(Op.RELEASE) === 1, 'the old handle released');
  t.like(s.files.openHandleStats, { staleDrops: 1, openHandles: 1 });
  // Same size, only the mtime changed: opened again too.
  fs.writeFileSync(p, 'AFTER, LONGER\n');
  fs.utimesSync(p, new Date(), new Date(Date.now() + 10_000));
  await new Promise((r) => setTimeout(r, 100));
  t.is((await s.get('/modified.txt')).body.toString(), 'AFTER, LONGER\n');
  t.is(s.dev.count(Op.OPEN), opens + 2);
  t.like(s.files.openHandleStats, { staleDrops: 2 });
});

test('an unchanged file stays on its handle across metadata timeouts (LOOKUP/GETATTR again, no OPEN)', async (t) => {
  const s = await site(t);
  s.dev.validMs = 20;
  await s.get('/c.txt');
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 40));
    const from = s.dev.served.length;
    t.is((await s.get('/c.txt')).body.toString(), 'file c\n');
    t.true(s.dev.count(Op.LOOKUP, from) + s.dev.count(Op.GETATTR, from) > 0, 'metadata asked again');
    t.is(s.dev.count(Op.OPEN, from), 0);
  }
  t.like(s.files.openHandleStats, { staleDrops: 0, misses: 1, hits: 3 });
});

test('eviction releases a handle exactly once, and not while a read on it is in flight', async (t) => {
  const { dev, vfs } = await withFs(t);
  let gate: Promise<void> | null = null;
  const inFlight = new Map<number, number>();
  const releasedUnderRead: number[] = [];
  const spy: VirtioFsSiteFs = {
    lstat: (p) => vfs.lstat(p),
    lstatCached: (p) => vfs.lstatCached(p),
    open: async (p) => {
      const h = await vfs.open(p);
      const read = h.read.bind(h);
      const close = h.close.bind(h);
      h.read = (async (buf: Uint8Array, off?: number, len?: number, pos?: number | null) => {
        inFlight.set(h.fh, (inFlight.get(h.fh) ?? 0) + 1);
        try {
          if (gate !== null) await gate;
          return await read(buf, off, len, pos);
        } finally {
          inFlight.set(h.fh, inFlight.get(h.fh)! - 1);
        }
      }) as VirtioFsFileHandle['read'];
      h.close = () => {
        if ((inFlight.get(h.fh) ?? 0) > 0) releasedUnderRead.push(h.fh);
        return close();
      };
      return h;
    },
  };
  const files = new VirtioFsSiteFiles(spy, { openHandleCache: 1 });
  const a = await files.open('/a.txt');
  let go!: () => void;
  gate = new Promise((r) => (go = r));
  const buf = Buffer.alloc(64);
  const reading = a.read(buf, 0, 64, 0);
  const b = await files.open('/b.txt'); // evicts /a.txt, whose read is in flight
  t.like(files.openHandleStats, { evictions: 1, openHandles: 2, cached: 1 });
  await new Promise((r) => setTimeout(r, 5));
  t.is(dev.count(Op.RELEASE), 0);
  go();
  gate = null;
  t.is(await reading, 7);
  t.is(buf.subarray(0, 7).toString(), 'file a\n');
  t.is(dev.count(Op.RELEASE), 0, 'still held by its request');
  await a.close();
  await until(() => dev.count(Op.RELEASE) === 1, 'RELEASE of /a.txt');
  await a.close();
  await b.close();
  await (await files.open('/c.txt')).close(); // evicts /b.txt, idle: released at once
  await until(() => dev.count(Op.RELEASE) === 2, 'RELEASE of /b.txt');
  await files.close();
  await until(() => dev.count(Op.RELEASE) === 3, 'RELEASE of /c.txt');
  const released = dev.served.filter((x) => x.op === Op.RELEASE).map((x) => x.fh);
  const opened = dev.served.filter((x) => x.op === Op.OPEN).map((x) => x.fh);
  t.deepEqual([...released].sort(), [...opened].sort(), 'each handle released once');
  t.deepEqual(releasedUnderRead, []);
  t.is(dev.stats.openHandles, 0);
  t.like(files.openHandleStats, { openHandles: 0, cached: 0, evictions: 2, releaseErrors: 0 });
});

test('openHandleCache 0: OPEN and RELEASE for every request, as without the cache', async (t) => {
  const s = await site(t, { openHandleCache: 0 });
  for (const f of ['/a.txt', '/big.bin']) {
    for (let i = 0; i < 3; i++) {
      const from = s.dev.served.length;
      t.true((await s.get(f)).body.equals(hostBytes(f)));
      await until(() => s.dev.count(Op.RELEASE, from) === 1, 'RELEASE');
      const ops = s.dev.ops(from).filter((op) => op !== Op.LOOKUP && op !== Op.GETATTR);
      t.true(ops.length >= 3, `${f} #${i}`);
      t.deepEqual(ops, [Op.OPEN, ...Array<number>(ops.length - 2).fill(Op.READ), Op.RELEASE], `${f} #${i}`);
    }
  }
  t.is(s.dev.stats.openHandles, 0);
  t.deepEqual(s.files.openHandleStats, { hits: 0, misses: 0, staleDrops: 0, evictions: 0, openHandles: 0, cached: 0, releaseErrors: 0 });
  await s.files.close(); // nothing to do
});

test('close() releases every cached handle; one in use goes when its request is done', async (t) => {
  const s = await site(t);
  for (const f of ['/a.txt', '/b.txt', '/c.txt', '/big.bin']) t.is((await s.get(f)).status, 200);
  t.is(s.dev.stats.openHandles, 4);
  const held = await s.files.open('/a.txt');
  await s.files.close();
  t.is(s.dev.count(Op.RELEASE), 3);
  t.is(s.dev.stats.openHandles, 1);
  await held.close();
  await until(() => s.dev.count(Op.RELEASE) === 4, 'the held one');
  t.is(s.dev.stats.openHandles, 0);
  // Requests after close() are still served, a handle each, released after.
  t.true((await s.get('/d.txt')).body.equals(hostBytes('d.txt')));
  await until(() => s.dev.count(Op.RELEASE) === 5, 'the late one');
  t.is(s.dev.stats.openHandles, 0);
  t.like(s.files.openHandleStats, { openHandles: 0, cached: 0, releaseErrors: 0 });
  const opened = s.dev.served.filter((x) => x.op === Op.OPEN).map((x) => x.fh);
  const released = s.dev.served.filter((x) => x.op === Op.RELEASE).map((x) => x.fh);
  t.deepEqual([...released].sort(), [...opened].sort());
});

test('a failing RELEASE does not break serving', async (t) => {
  const s = await site(t, { openHandleCache: 1 });
  s.dev.failRelease = true;
  for (const f of ['/a.txt', '/b.txt', '/a.txt', '/big.bin', '/a.txt']) {
    const r = await s.get(f);
    t.is(r.status, 200, f);
    t.true(r.body.equals(hostBytes(f)), f);
  }
  await until(() => s.files.openHandleStats.releaseErrors === 4, 'four failed RELEASEs');
  t.true(s.dev.served.filter((x) => x.op === Op.RELEASE).every((x) => x.error === -5));
  t.like(s.files.openHandleStats, { evictions: 4, openHandles: 1 });
  await s.files.close();
  t.like(s.files.openHandleStats, { releaseErrors: 5, openHandles: 0 });
  t.is(s.dev.stats.openHandles, 0, 'the device closed them all the same');
});
