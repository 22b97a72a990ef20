// The driver against a device that breaks the FUSE protocol on purpose: the request it
// answers badly fails with a FuseCodecError naming its opcode and unique, and the next
// request works. INIT with a version the driver cannot speak is refused at start.
import test from 'ava';
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import type { DescriptorChain, VirtqueueDevice } from '../kernel/virtqueue/device-queue.js';
import type { RingChoice } from '../kernel/virtqueue/ring.js';
import { TamperingFsDevice } from './support/tampering-fs-device.js';
import { FsError, FuseCodecError, VirtioFsDriver } from '../drivers/virtio-fs/driver/index.js';
import { FuseOpcode } from '../drivers/virtio-fs/fuse-protocol.js';
import { readU64, writeU64 } from '../drivers/virtio-fs/fuse-codec.js';

type FaultKind = 'length' | 'unique' | 'errno-range' | 'errno-positive' | 'short' | 'body' | 'error-with-body' | 'init-major' | 'init-minor' | 'random';

/** Wraps the real device and corrupts the next reply to `opcode`. */
class FaultyFsDevice extends TamperingFsDevice {
  readonly name = 'faulty virtio-fs';
  fault: { opcode: number; kind: FaultKind; noise?: Uint8Array; written?: number } | null = null;
  /** Next kick on the request queue: publish an impossible used.idx instead of serving. */
  breakRing = false;

  constructor(root: string) {
    super(root, 'faulty');
  }

  protected override intercept(index: number, q: VirtqueueDevice): boolean {
    if (!this.breakRing || index !== 1) return false;
    if (q.layout === 'split') {
      // Scribble on the used ring as a buggy device would: used.idx far ahead.
      const used = (q as unknown as { usedU16: Uint16Array }).usedU16;
      Atomics.add(used, 1, 1000);
    } else {
      // A used descriptor at the next used position naming an id never made available.
      const p = q as unknown as { descU16: Uint16Array; nextUsed: number; usedWrap: number };
      p.descU16[p.nextUsed * 8 + 6] = 999;
      Atomics.store(p.descU16, p.nextUsed * 8 + 7, p.usedWrap !== 0 ? 0x8080 : 0);
    }
    this.ctx?.interrupt(index);
    return true;
  }

  protected answer(chain: DescriptorChain, n: number): number {
    if (!this.fault || this.fault.opcode !== readOpcode(chain)) return n;
    const f = this.fault;
    this.fault = null;
    return f.kind === 'random' ? scramble(chain, n, f.noise!, f.written!) : corrupt(chain, n, f.kind);
  }
}

function readOpcode(chain: DescriptorChain): number {
  const b = Buffer.alloc(8);
  chain.read(0, b, 0, 8);
  return b.readUInt32LE(4);
}

/** XORs noise into the reply and claims a random written length (at most what was written). */
function scramble(chain: DescriptorChain, n: number, noise: Uint8Array, writtenFraction: number): number {
  const seg = chain.segment(chain.readableCount);
  for (let i = 0; i < Math.min(seg.length, noise.length); i++) seg[i]! ^= noise[i]!;
  return Math.floor(n * writtenFraction);
}

function corrupt(chain: DescriptorChain, n: number, kind: FaultKind): number {
  const seg = chain.segment(chain.readableCount); // out header + fixed reply
  const dv = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
  switch (kind) {
    case 'length':
      dv.setUint32(0, n + 8, true);
      return n;
    case 'unique':
      writeU64(dv, 8, readU64(dv, 8) + 12345);
      return n;
    case 'errno-range':
      dv.setUint32(0, 16, true);
      dv.setInt32(4, -600, true);
      return 16;
    case 'errno-positive':
      dv.setUint32(0, 16, true);
      dv.setInt32(4, 5, true);
      return 16;
    case 'short':
      return 8;
    case 'body':
      dv.setUint32(0, n - 8, true);
      return n - 8;
    case 'error-with-body':
      dv.setInt32(4, -2, true);
      return n;
    case 'init-major':
      dv.setUint32(16, 8, true);
      return n;
    case 'init-minor':
      dv.setUint32(20, 20, true);
      return n;
    case 'random':
      return n;
  }
}

let root = '';
test.before(() => {
  root = fs.mkdtempSync(join(tmpdir(), 'virtiofs-bad-'));
  fs.writeFileSync(join(root, 'one.bin'), 'x');
  fs.writeFileSync(join(root, 'data.bin'), randomBytes(50000));
  fs.mkdirSync(join(root, 'dir'));
});
test.after.always(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

async function setup(t: { teardown(fn: () => unknown): void }, ring: RingChoice = 'auto'): Promise<{ dev: FaultyFsDevice; vfs: VirtioFsDriver }> {
  const dev = new FaultyFsDevice(root);
  const transport = InProcessTransport.sameThread(dev, { memoryBytes: 16 << 20 });
  let vfs: VirtioFsDriver | null = null;
  t.teardown(async () => {
    try {
      await vfs?.close();
    } finally {
      await transport.close();
    }
  });
  vfs = await VirtioFsDriver.start(transport, { ring });
  return { dev, vfs };
}

const CASES: Array<[FaultKind, string, RegExp]> = [
  ['length', 'ERR_FUSE_LENGTH', /fuse_out_header\.len/],
  ['unique', 'ERR_FUSE_UNIQUE', /unique/],
  ['errno-range', 'ERR_FUSE_ERRNO_RANGE', /-600/],
  ['errno-positive', 'ERR_FUSE_ERRNO_RANGE', /error 5/],
  ['short', 'ERR_FUSE_SHORT', /shorter than fuse_out_header/],
  ['body', 'ERR_FUSE_LENGTH', /fuse_entry_out is 128 bytes, got 120/],
  ['error-with-body', 'ERR_FUSE_LENGTH', /error reply/],
];

for (const [kind, code, message] of CASES) {
  test(`a LOOKUP reply with a bad ${kind} fails that request only`, async (t) => {
    const { dev, vfs } = await setup(t);
    dev.fault = { opcode: FuseOpcode.LOOKUP, kind };
    const err = await t.throwsAsync(vfs.stat('one.bin'));
    t.true(err instanceof FuseCodecError);
    t.is((err as FuseCodecError).code as string, code);
    t.is((err as FuseCodecError).opcode, FuseOpcode.LOOKUP);
    t.true((err as FuseCodecError).unique > 0);
    t.regex(err!.message, /^FUSE LOOKUP \(unique \d+\): /);
    t.regex(err!.message, message);
    t.is(vfs.stats.badReplies, 1);
    // The next request works.
    t.is((await vfs.stat('one.bin')).size, 1);
    t.deepEqual((await vfs.readdir('/')).sort(), ['data.bin', 'dir', 'one.bin']);
  });
}

test('a bad READ reply fails that readFile; the handle is released; the next read works', async (t) => {
  const { dev, vfs } = await setup(t);
  dev.fault = { opcode: FuseOpcode.READ, kind: 'unique' };
  await t.throwsAsync(vfs.readFile('data.bin'), { instanceOf: FuseCodecError, code: 'ERR_FUSE_UNIQUE' });
  t.true((await vfs.readFile('data.bin')).equals(fs.readFileSync(join(root, 'data.bin'))));
  t.is(dev.inner.stats.openHandles, 0);
});

test('a bad GETATTR body fails stat of the root, then stat works', async (t) => {
  const { dev, vfs } = await setup(t);
  dev.fault = { opcode: FuseOpcode.GETATTR, kind: 'body' };
  await t.throwsAsync(vfs.stat('/'), { instanceOf: FuseCodecError, code: 'ERR_FUSE_LENGTH', message: /FUSE GETATTR/ });
  t.true((await vfs.stat('/')).isDirectory());
});

for (const kind of ['init-major', 'init-minor'] as const) {
  test(`INIT: a device speaking an unusable version (${kind}) is refused with a clear error`, async (t) => {
    const dev = new FaultyFsDevice(root);
    const transport = InProcessTransport.sameThread(dev, { memoryBytes: 16 << 20 });
    t.teardown(() => transport.close());
    dev.fault = { opcode: FuseOpcode.INIT, kind };
    const freeBefore = transport.dma.freeBytes;
    const err = await t.throwsAsync(VirtioFsDriver.start(transport), { code: 'ERR_VIRTIO_FS_INIT' });
    t.regex(err!.message, kind === 'init-major' ? /FUSE 8\.31; this driver speaks only major 7/ : /FUSE 7\.20; this driver needs at least 7\.23/);
    t.is(transport.dma.freeBytes, freeBefore, 'DMA memory given back');
  });
}

test('property: any corruption of one reply fails at most that operation with FsError or FuseCodecError', async (t) => {
  const { dev, vfs } = await setup(t);
  const opcodes = [FuseOpcode.LOOKUP, FuseOpcode.GETATTR, FuseOpcode.OPEN, FuseOpcode.READ, FuseOpcode.RELEASE, FuseOpcode.OPENDIR, FuseOpcode.READDIR, FuseOpcode.RELEASEDIR, FuseOpcode.STATFS];
  const want = fs.readFileSync(join(root, 'data.bin'));
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...opcodes), fc.uint8Array({ minLength: 1, maxLength: 160 }), fc.double({ min: 0, max: 1, noNaN: true }), async (opcode, noise, written) => {
      run++;
      dev.fault = { opcode, kind: 'random', noise, written };
      const ops: Array<() => Promise<unknown>> = [
        () => vfs.stat(`dir/../one.bin`),
        () => vfs.readFile('data.bin'),
        () => vfs.readdir('/'),
        () => vfs.statfs(),
      ];
      for (const op of ops) {
        try {
          await op();
        } catch (e) {
          if (!(e instanceof FsError) && !(e instanceof FuseCodecError)) throw e;
        }
      }
      dev.fault = null;
      // Unpoisoned requests work: the file system answers and reads are right.
      t.true((await vfs.statfs()).bsize > 0);
      const h = await vfs.open('data.bin').catch(() => null);
      if (h !== null) {
        const b = Buffer.alloc(1000);
        try {
          const r = await h.read(b, 0, 1000, 100).catch(() => null);
          if (r !== null && r.bytesRead === 1000) t.true(b.equals(want.subarray(100, 1100)), `run ${run}`);
        } finally {
          await h.close().catch(() => {});
        }
      }
    }),
    { numRuns: 150 },
  );
  t.true(vfs.stats.badReplies > 0);
});

for (const [ring, message] of [
  ['split', /used\.idx/],
  ['packed', /used descriptor \d+ names buffer id 999, which is not an outstanding chain made available/],
] as const) {
  test(`${ring} ring: a device that breaks the ring fails requests with ERR_VIRTIO_FS_QUEUE_BROKEN instead of hanging`, async (t) => {
    const { dev, vfs } = await setup(t, ring);
    t.is(vfs.ringLayout, ring);
    t.is((await vfs.stat('one.bin')).size, 1);
    dev.breakRing = true;
    const err = await t.throwsAsync(vfs.stat('data.bin'), { code: 'ERR_VIRTIO_FS_QUEUE_BROKEN' });
    t.regex(err!.message, message);
    await t.throwsAsync(vfs.readdir('/'), { code: 'ERR_VIRTIO_FS_QUEUE_BROKEN' });
    await vfs.close(); // does not wait for answers that will never come
    t.pass();
  });
}
