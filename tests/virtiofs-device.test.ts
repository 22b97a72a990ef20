// The in-process virtio-fs device against hand-made (and hostile) requests, through a
// raw driver-side virtqueue: malformed chains and requests get errors, never a crash;
// nothing escapes the served root.
import test from 'ava';
import fc from 'fast-check';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { setupDriverQueue } from '../kernel/transport/queue-setup.js';
import type { VirtqueueDriver } from '../kernel/virtqueue/driver-queue.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, featureBit } from '../kernel/virtqueue/layout.js';
import { VirtioFsDevice } from '../drivers/virtio-fs/device/virtio-fs-device.js';
import {
  decodeDirentsPlus,
  decodeEntryOut,
  decodeInitOut,
  encodeInHeader,
  encodeInitIn,
  encodeOpenIn,
  encodeReadIn,
  encodeReleaseIn,
  encodeGetattrIn,
} from '../drivers/virtio-fs/fuse-codec.js';
import { FuseOpcode as Op, O_WRONLY, S_IFLNK, S_IFMT } from '../drivers/virtio-fs/fuse-protocol.js';
import { errnoOf } from '../drivers/virtio-fs/errno.js';

let root = '';
let outside = '';
test.before(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'virtiofs-dev-'));
  outside = fs.mkdtempSync(join(tmpdir(), 'virtiofs-outside-'));
  fs.writeFileSync(join(outside, 'secret'), 'do not serve');
  fs.writeFileSync(join(root, 'hello.txt'), 'hello world');
  fs.mkdirSync(join(root, 'sub'));
  fs.writeFileSync(join(root, 'sub', 'inner.txt'), 'inner');
  fs.symlinkSync(outside, join(root, 'outside'));
  fs.symlinkSync(join(outside, 'secret'), join(root, 'secret-link'));
});
test.after.always(() => {
  for (const d of [root, outside]) if (d) fs.rmSync(d, { recursive: true, force: true });
});

const E = (n: string): number => errnoOf(n)!;

interface Reply {
  written: number;
  len: number;
  error: number;
  unique: number;
  body: Uint8Array;
}

/** A bare driver: one request queue, chains built by hand. */
class RawFuse {
  private readonly waiters = new Map<number, (written: number) => void>();
  private nextToken = 1;
  unique = 100;

  private constructor(
    readonly transport: InProcessTransport,
    readonly device: VirtioFsDevice,
    readonly q: VirtqueueDriver<number>,
  ) {
    transport.onInterrupt(() => {
      do {
        q.drainUsed((token, written) => {
          this.waiters.get(token)?.(written);
          this.waiters.delete(token);
        });
      } while (q.enableInterrupts());
    });
  }

  static open(t: { teardown(fn: () => unknown): void }): RawFuse {
    const device = new VirtioFsDevice({ root, tag: 'raw' });
    const transport = InProcessTransport.sameThread(device, { memoryBytes: 8 << 20 });
    t.teardown(() => transport.close());
    transport.reset();
    transport.negotiate(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX));
    setupDriverQueue<number>(transport, 0, 'hiprio', 16, true);
    const q = setupDriverQueue<number>(transport, 1, 'requests', 64, true);
    transport.driverOk();
    return new RawFuse(transport, device, q);
  }

  /** Sends one chain: `readable` bytes, then writable buffers of the given sizes. */
  async chain(readable: Uint8Array, writable: number[]): Promise<Reply> {
    const dma = this.transport.dma;
    const rbuf = readable.length > 0 ? dma.allocate(readable.length) : null;
    const wbufs = writable.map((n) => (n > 0 ? dma.allocate(n) : null));
    try {
      if (rbuf) rbuf.set(readable);
      const token = this.nextToken++;
      this.q.chainBegin();
      if (rbuf) this.q.chainAdd(dma.addressOf(rbuf), rbuf.length, false);
      for (const w of wbufs) if (w) this.q.chainAdd(dma.addressOf(w), w.length, true);
      this.q.chainCommit(token);
      const done = new Promise<number>((resolve) => this.waiters.set(token, resolve));
      if (this.q.publish()) this.transport.notify(1);
      const written = await done;
      const all = Buffer.concat(wbufs.map((w) => (w ? Buffer.from(w) : Buffer.alloc(0))));
      const dv = new DataView(all.buffer, all.byteOffset, all.byteLength);
      return written >= 16
        ? { written, len: dv.getUint32(0, true), error: dv.getInt32(4, true), unique: dv.getUint32(8, true), body: all.subarray(16, written) }
        : { written, len: 0, error: 0, unique: 0, body: new Uint8Array(0) };
    } finally {
      if (rbuf) dma.free(rbuf);
      for (const w of wbufs) if (w) dma.free(w);
    }
  }

  /** A request with header `opcode`/`nodeid` and the given argument bytes. */
  request(opcode: number, nodeid: number, args: Uint8Array = new Uint8Array(0), replyBytes = 4096, lenOverride?: number): Promise<Reply> {
    const b = new Uint8Array(40 + args.length);
    const dv = new DataView(b.buffer);
    encodeInHeader(dv, 0, { len: lenOverride ?? b.length, opcode, unique: ++this.unique, nodeid, uid: 0, gid: 0, pid: 0 });
    b.set(args, 40);
    return this.chain(b, replyBytes > 0 ? [replyBytes] : []);
  }

  async init(): Promise<Reply> {
    const a = new Uint8Array(16);
    encodeInitIn(new DataView(a.buffer), 0, { major: 7, minor: 31, maxReadahead: 65536, flags: 0 });
    return this.request(Op.INIT, 0, a);
  }

  name(s: string): Uint8Array {
    return Buffer.from(s + '\0');
  }

  async lookup(parent: number, name: string): Promise<Reply> {
    return this.request(Op.LOOKUP, parent, this.name(name));
  }
}

const args = (n: number, fill: (dv: DataView) => void): Uint8Array => {
  const a = new Uint8Array(n);
  fill(new DataView(a.buffer));
  return a;
};

const entryOf = (r: Reply) => decodeEntryOut(new DataView(r.body.buffer, r.body.byteOffset, r.body.byteLength), 0, r.body.length);

test('requests before INIT get EIO; INIT negotiates 7.31', async (t) => {
  const raw = RawFuse.open(t);
  const r0 = await raw.request(Op.GETATTR, 1, new Uint8Array(16));
  t.is(r0.error, -E('EIO'));
  const r = await raw.init();
  t.is(r.error, 0);
  t.is(r.len, 16 + 64);
  const init = decodeInitOut(new DataView(r.body.buffer, r.body.byteOffset, r.body.byteLength), 0, r.body.length);
  t.is(init.major, 7);
  t.is(init.minor, 31);
  t.is((await raw.init()).error, -E('EIO'), 'a second INIT is refused');
});

test('malformed chains and headers: unanswered or EINVAL, never a crash', async (t) => {
  const raw = RawFuse.open(t);
  await raw.init();
  t.is((await raw.chain(new Uint8Array(20), [64])).written, 0, 'readable part shorter than a header');
  const r = await raw.request(Op.GETATTR, 1, new Uint8Array(16), 4096, 500);
  t.is(r.error, -E('EINVAL'), 'in.len beyond the readable bytes');
  t.is(r.unique, raw.unique);
  t.is((await raw.request(Op.GETATTR, 1, new Uint8Array(16), 0)).written, 0, 'no writable part: nothing to answer into');
  t.is((await raw.request(Op.LOOKUP, 1, raw.name('hello.txt'), 20)).error, -E('EINVAL'), 'reply does not fit');
  t.is((await raw.request(Op.GETATTR, 1, new Uint8Array(4))).error, -E('EINVAL'), 'short arguments');
  // Still serving.
  t.is((await raw.lookup(1, 'hello.txt')).error, 0);
});

test('names: ".", "..", "/", missing NUL, empty are errors; unknown node ids and handles too', async (t) => {
  const raw = RawFuse.open(t);
  await raw.init();
  for (const bad of ['..', '.', 'sub/inner.txt', '']) t.is((await raw.lookup(1, bad)).error, -E('EINVAL'), JSON.stringify(bad));
  t.is((await raw.request(Op.LOOKUP, 1, Buffer.from('hello.txt'))).error, -E('EINVAL'), 'no NUL');
  t.is((await raw.lookup(1, 'nope')).error, -E('ENOENT'));
  t.is((await raw.lookup(999, 'hello.txt')).error, -E('ESTALE'));
  t.is((await raw.request(Op.GETATTR, 4242, new Uint8Array(16))).error, -E('ESTALE'));
  const readArgs = args(40, (dv) => encodeReadIn(dv, 0, 77, 0, 100));
  t.is((await raw.request(Op.READ, 1, readArgs)).error, -E('EBADF'));
  t.is((await raw.request(Op.READDIR, 1, readArgs)).error, -E('EBADF'));
  t.is((await raw.request(Op.RELEASE, 1, args(24, (dv) => encodeReleaseIn(dv, 0, 77, 0)))).error, -E('EBADF'));
  t.is((await raw.request(Op.GETATTR, 1, args(16, (dv) => encodeGetattrIn(dv, 0, 1, 12345)))).error, 0, 'unknown fh with GETATTR_FH falls back to the node');
  // A file handle is not a directory handle.
  const file = entryOf(await raw.lookup(1, 'hello.txt'));
  const open = await raw.request(Op.OPEN, file.nodeid, args(8, (dv) => encodeOpenIn(dv, 0, 0)));
  t.is(open.error, 0);
  const fh = new DataView(open.body.buffer, open.body.byteOffset).getUint32(0, true);
  t.is((await raw.request(Op.READDIR, 1, args(40, (dv) => encodeReadIn(dv, 0, fh, 0, 4096)))).error, -E('EBADF'));
  t.is((await raw.request(Op.RELEASEDIR, 1, args(24, (dv) => encodeReleaseIn(dv, 0, fh, 0)))).error, -E('EBADF'));
  t.is((await raw.request(Op.RELEASE, file.nodeid, args(24, (dv) => encodeReleaseIn(dv, 0, fh, 0)))).error, 0);
});

test('read-only: writes get EROFS, unknown opcodes ENOSYS', async (t) => {
  const raw = RawFuse.open(t);
  await raw.init();
  for (const op of [Op.WRITE, Op.MKDIR, Op.CREATE, Op.UNLINK, Op.SETATTR, Op.RENAME, Op.SYMLINK]) {
    t.is((await raw.request(op, 1, new Uint8Array(64))).error, -E('EROFS'), `opcode ${op}`);
  }
  for (const op of [Op.GETXATTR, Op.IOCTL, 200, 0xffffffff]) t.is((await raw.request(op, 1, new Uint8Array(8))).error, -E('ENOSYS'), `opcode ${op}`);
  const file = entryOf(await raw.lookup(1, 'hello.txt'));
  t.is((await raw.request(Op.OPEN, file.nodeid, args(8, (dv) => encodeOpenIn(dv, 0, O_WRONLY)))).error, -E('EROFS'));
});

test('symlinks are nodes of their own: never followed out of the root', async (t) => {
  const raw = RawFuse.open(t);
  await raw.init();
  const link = entryOf(await raw.lookup(1, 'outside'));
  t.is(link.attr.mode & S_IFMT, S_IFLNK);
  const inner = await raw.lookup(link.nodeid, 'secret');
  t.is(inner.error, -E('EACCES'), 'lookup under a symlink to a directory outside');
  t.is((await raw.request(Op.OPENDIR, link.nodeid, new Uint8Array(8))).error, -E('EACCES'));
  const fileLink = entryOf(await raw.lookup(1, 'secret-link'));
  t.is((await raw.request(Op.OPEN, fileLink.nodeid, args(8, (dv) => encodeOpenIn(dv, 0, 0)))).error, -E('ELOOP'));
  const rl = await raw.request(Op.READLINK, fileLink.nodeid);
  t.is(rl.error, 0);
  t.is(Buffer.from(rl.body).toString(), join(outside, 'secret'));
  t.is((await raw.request(Op.READLINK, 1)).error, -E('EINVAL'), 'READLINK of a directory');
});

test('READDIRPLUS returns looked-up entries; FORGET gives them back', async (t) => {
  const raw = RawFuse.open(t);
  await raw.init();
  const od = await raw.request(Op.OPENDIR, 1, new Uint8Array(8));
  t.is(od.error, 0);
  const fh = new DataView(od.body.buffer, od.body.byteOffset).getUint32(0, true);
  const rd = await raw.request(Op.READDIRPLUS, 1, args(40, (dv) => encodeReadIn(dv, 0, fh, 0, 8192)), 8192 + 16);
  t.is(rd.error, 0);
  const ents = decodeDirentsPlus(rd.body, new DataView(rd.body.buffer, rd.body.byteOffset, rd.body.byteLength), 0, rd.body.length);
  t.deepEqual(ents.map((e) => e.name).sort(), ['.', '..', 'hello.txt', 'outside', 'secret-link', 'sub']);
  const looked = ents.filter((e) => e.entry.nodeid !== 0);
  t.is(looked.length, 4);
  t.is(raw.device.stats.lookups, 4);
  for (const e of looked) {
    const f = args(48, (dv) => {
      encodeInHeader(dv, 0, { len: 48, opcode: Op.FORGET, unique: 1, nodeid: e.entry.nodeid, uid: 0, gid: 0, pid: 0 });
      dv.setUint32(40, 1, true);
    });
    t.is((await raw.chain(f, [])).written, 0);
  }
  t.is(raw.device.stats.lookups, 0);
  t.is(raw.device.stats.nodes, 1);
  // A reply buffer too small for one entry: empty reply, no lookup counted.
  const small = await raw.request(Op.READDIRPLUS, 1, args(40, (dv) => encodeReadIn(dv, 0, fh, 2, 100)), 116);
  t.is(small.error, 0);
  t.is(small.len, 16);
  t.is(raw.device.stats.lookups, 0);
});

test('property: random chains never crash the device; every answer is a well-formed reply', async (t) => {
  const raw = RawFuse.open(t);
  await raw.init();
  const file = entryOf(await raw.lookup(1, 'hello.txt'));
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        opcode: fc.oneof(fc.integer({ min: 0, max: 52 }), fc.integer({ min: 0, max: 0xffffffff })),
        nodeid: fc.oneof(fc.constant(1), fc.constant(file.nodeid), fc.integer({ min: 0, max: 2 ** 32 })),
        lenDelta: fc.integer({ min: -60, max: 60 }),
        body: fc.uint8Array({ maxLength: 300 }),
        writable: fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 3 }),
        raw: fc.boolean(),
      }),
      async (c) => {
        let readable: Uint8Array;
        if (c.raw) readable = c.body.length > 0 ? c.body : new Uint8Array(1); // a chain needs a descriptor
        else {
          readable = new Uint8Array(40 + c.body.length);
          encodeInHeader(new DataView(readable.buffer), 0, { len: Math.max(0, 40 + c.body.length + c.lenDelta), opcode: c.opcode, unique: 5, nodeid: c.nodeid, uid: 0, gid: 0, pid: 0 });
          readable.set(c.body, 40);
        }
        const r = await raw.chain(readable, c.writable);
        const room = c.writable.reduce((a, b) => a + b, 0);
        t.true(r.written <= room);
        if (r.written > 0) {
          t.true(r.written >= 16);
          t.is(r.len, r.written);
          t.true(r.error <= 0 && r.error > -512);
        }
      },
    ),
    { numRuns: 300 },
  );
  await raw.init(); // a random DESTROY may have ended the session
  t.is((await raw.lookup(1, 'hello.txt')).error, 0, 'still serving');
});
