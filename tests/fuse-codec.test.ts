// Property tests for the FUSE codec: encode/decode round trips, and decoders fed
// garbage (they throw nothing but FuseCodecError and never read past `len`).
import test from 'ava';
import fc from 'fast-check';
import {
  FuseCodecError,
  type FuseAttr,
  decodeAttrOut,
  decodeBatchForgetIn,
  decodeDirents,
  decodeDirentsPlus,
  decodeEntryOut,
  decodeForgetIn,
  decodeGetattrIn,
  decodeInHeader,
  decodeInitIn,
  decodeInitOut,
  decodeName,
  decodeOpenIn,
  decodeOpenOut,
  decodeOutHeader,
  decodeReadIn,
  decodeReleaseIn,
  decodeStatfsOut,
  encodeAttrOut,
  encodeBatchForgetIn,
  encodeDirent,
  encodeDirentPlus,
  encodeEntryOut,
  encodeForgetIn,
  encodeGetattrIn,
  encodeInHeader,
  encodeInitIn,
  encodeInitOut,
  encodeName,
  encodeOpenIn,
  encodeOpenOut,
  encodeOutHeader,
  encodeReadIn,
  encodeReleaseIn,
  encodeStatfsOut,
  negotiateMinor,
} from '../drivers/virtio-fs/fuse-codec.js';
import { decodeVirtioFsConfig, encodeVirtioFsConfig } from '../drivers/virtio-fs/virtio-fs-config.js';

const buf = (n: number): { u8: Uint8Array; dv: DataView } => {
  const u8 = new Uint8Array(n);
  return { u8, dv: new DataView(u8.buffer) };
};

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const id = fc.maxSafeNat();
const nsec = fc.integer({ min: 0, max: 999_999_999 });
const secs = fc.integer({ min: -(2 ** 40), max: 2 ** 40 });
const goodName = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
  .filter((s) => s !== '.' && s !== '..' && !s.includes('/') && !s.includes('\0') && Buffer.byteLength(s) <= 255 && !s.includes('\uFFFD'));

const attr: fc.Arbitrary<FuseAttr> = fc.record({
  ino: id,
  size: id,
  blocks: id,
  atime: secs,
  mtime: secs,
  ctime: secs,
  atimensec: nsec,
  mtimensec: nsec,
  ctimensec: nsec,
  mode: u32,
  nlink: u32,
  uid: u32,
  gid: u32,
  rdev: u32,
  blksize: u32,
  flags: u32,
});
const entry = fc.record({ nodeid: id, generation: id, entryValid: id, attrValid: id, entryValidNsec: u32, attrValidNsec: u32, attr });

test('round trip: in header', (t) => {
  fc.assert(
    fc.property(fc.record({ opcode: u32, unique: id, nodeid: id, uid: u32, gid: u32, pid: u32 }), fc.integer({ min: 0, max: 200 }), (h, extra) => {
      const { dv } = buf(40 + extra);
      const full = { ...h, len: 40 + extra };
      encodeInHeader(dv, 0, full);
      t.deepEqual(decodeInHeader(dv, 0, 40 + extra), full);
    }),
  );
});

test('round trip: out header, and its checks', (t) => {
  fc.assert(
    fc.property(id, fc.integer({ min: 0, max: 511 }), fc.integer({ min: 0, max: 1000 }), (unique, errno, body) => {
      const { dv } = buf(16);
      const len = errno === 0 ? 16 + body : 16;
      encodeOutHeader(dv, 0, len, -errno, unique);
      const out = { len: 0, error: 0, unique: 0 };
      t.is(decodeOutHeader(dv, 0, len, 3, unique, out), errno);
      t.throws(() => decodeOutHeader(dv, 0, len, 3, unique === 0 ? 1 : unique - 1, out), { instanceOf: FuseCodecError, code: 'ERR_FUSE_UNIQUE' });
      t.throws(() => decodeOutHeader(dv, 0, len + 1, 3, unique, out), { instanceOf: FuseCodecError, code: 'ERR_FUSE_LENGTH' });
    }),
  );
});

test('out header: any bytes give an errno in 0..511 or a FuseCodecError', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 100 }), id, (bytes, written, unique) => {
      const dv = new DataView(bytes.buffer);
      try {
        const errno = decodeOutHeader(dv, 0, written, 1, unique, { len: 0, error: 0, unique: 0 });
        t.true(errno >= 0 && errno <= 511);
        t.true(errno === 0 || written === 16);
      } catch (e) {
        t.true(e instanceof FuseCodecError, String(e));
      }
    }),
  );
});

test('round trip: INIT in and out', (t) => {
  fc.assert(
    fc.property(fc.record({ major: u32, minor: u32, maxReadahead: u32, flags: u32 }), (v) => {
      const { dv } = buf(16);
      encodeInitIn(dv, 0, v);
      t.deepEqual(decodeInitIn(dv, 0, 16), v);
    }),
  );
  fc.assert(
    fc.property(
      fc.record({ major: u32, minor: u32, maxReadahead: u32, flags: u32, maxBackground: u16, congestionThreshold: u16, maxWrite: u32, timeGran: u32, maxPages: u16, mapAlignment: u16 }),
      (v) => {
        const { dv } = buf(64);
        encodeInitOut(dv, 0, v);
        t.deepEqual(decodeInitOut(dv, 0, 64), v);
      },
    ),
  );
});

test('INIT version negotiation', (t) => {
  const init = (major: number, minor: number) => ({ major, minor, maxReadahead: 0, flags: 0, maxBackground: 0, congestionThreshold: 0, maxWrite: 0, timeGran: 0, maxPages: 0, mapAlignment: 0 });
  t.is(negotiateMinor(init(7, 38), 7, 31, 23), 31);
  t.is(negotiateMinor(init(7, 27), 7, 31, 23), 27);
  t.throws(() => negotiateMinor(init(7, 22), 7, 31, 23), { code: 'ERR_FUSE_VERSION' });
  t.throws(() => negotiateMinor(init(8, 0), 7, 31, 23), { code: 'ERR_FUSE_VERSION' });
  t.throws(() => negotiateMinor(init(6, 40), 7, 31, 23), { code: 'ERR_FUSE_VERSION' });
});

test('round trip: entry, attr out, open, read, release, getattr, forget, statfs', (t) => {
  fc.assert(
    fc.property(entry, (e) => {
      const { dv } = buf(128);
      t.is(encodeEntryOut(dv, 0, e), 128);
      t.deepEqual(decodeEntryOut(dv, 0, 128), e);
      t.throws(() => decodeEntryOut(dv, 0, 127), { instanceOf: FuseCodecError });
    }),
  );
  fc.assert(
    fc.property(id, nsec, attr, (attrValid, attrValidNsec, a) => {
      const { dv } = buf(104);
      encodeAttrOut(dv, 0, { attrValid, attrValidNsec, attr: a });
      t.deepEqual(decodeAttrOut(dv, 0, 104), { attrValid, attrValidNsec, attr: a });
    }),
  );
  fc.assert(
    fc.property(id, u32, id, id, u32, (fh, flags, offset, nlookup, size) => {
      const { dv } = buf(64);
      encodeOpenIn(dv, 0, flags);
      t.deepEqual(decodeOpenIn(dv, 0, 8), { flags, openFlags: 0 });
      encodeOpenOut(dv, 0, fh, flags);
      t.deepEqual(decodeOpenOut(dv, 0, 16), { fh, openFlags: flags });
      encodeReadIn(dv, 0, fh, offset, size);
      t.deepEqual(decodeReadIn(dv, 0, 40), { fh, offset, size, readFlags: 0, lockOwner: 0, flags: 0 });
      encodeReleaseIn(dv, 0, fh, flags);
      t.deepEqual(decodeReleaseIn(dv, 0, 24), { fh, flags, releaseFlags: 0 });
      encodeGetattrIn(dv, 0, 1, fh);
      t.deepEqual(decodeGetattrIn(dv, 0, 16), { getattrFlags: 1, fh });
      encodeForgetIn(dv, 0, nlookup);
      t.is(decodeForgetIn(dv, 0, 8), nlookup);
    }),
  );
  fc.assert(
    fc.property(fc.array(fc.record({ nodeid: id, nlookup: id }), { maxLength: 20 }), (items) => {
      const { dv } = buf(8 + 16 * items.length);
      const n = encodeBatchForgetIn(dv, 0, items);
      t.deepEqual(decodeBatchForgetIn(dv, 0, n), items);
    }),
  );
  fc.assert(
    fc.property(fc.record({ blocks: id, bfree: id, bavail: id, files: id, ffree: id, bsize: u32, namelen: u32, frsize: u32 }), (s) => {
      const { dv } = buf(80);
      encodeStatfsOut(dv, 0, s);
      t.deepEqual(decodeStatfsOut(dv, 0, 80), s);
    }),
  );
});

test('round trip: names', (t) => {
  fc.assert(
    fc.property(goodName, (name) => {
      const { u8 } = buf(300);
      const n = encodeName(u8, 0, 300, name);
      t.is(n, Buffer.byteLength(name) + 1);
      t.is(decodeName(u8, 0, n), name);
    }),
  );
  for (const bad of ['', '.', '..', 'a/b', 'a\0b', 'x'.repeat(256)]) {
    t.throws(() => encodeName(new Uint8Array(600), 0, 600, bad), { instanceOf: FuseCodecError });
  }
  t.throws(() => encodeName(new Uint8Array(10), 0, 10, 'abcdefghij'), { instanceOf: FuseCodecError });
});

test('round trip: directory entries (READDIR and READDIRPLUS)', (t) => {
  const utf8 = new TextEncoder();
  fc.assert(
    fc.property(fc.array(fc.record({ ino: id, off: id, type: fc.integer({ min: 0, max: 15 }), name: goodName }), { maxLength: 20 }), entry, (ents, e) => {
      const { u8, dv } = buf(20 * (152 + 8 + 255));
      let pos = 0;
      for (const d of ents) pos += encodeDirent(u8, dv, pos, u8.length - pos, d.ino, d.off, d.type, utf8.encode(d.name));
      t.deepEqual(decodeDirents(u8, dv, 0, pos), ents);
      t.is(pos % 8, 0);
      pos = 0;
      for (const d of ents) pos += encodeDirentPlus(u8, dv, pos, u8.length - pos, { ...e, attr: { ...e.attr, ino: d.ino } }, d.off, d.type, utf8.encode(d.name));
      const plus = decodeDirentsPlus(u8, dv, 0, pos);
      t.deepEqual(
        plus.map(({ entry: _e, ...d }) => d),
        ents,
      );
    }),
  );
  // No room: nothing written.
  const { u8, dv } = buf(30);
  t.is(encodeDirent(u8, dv, 0, 30, 1, 1, 8, utf8.encode('abcdefg')), 0);
});

test('virtio-fs config round trip', (t) => {
  fc.assert(
    fc.property(goodName.filter((s) => Buffer.byteLength(s) <= 36), fc.integer({ min: 1, max: 1000 }), (tag, numRequestQueues) => {
      t.deepEqual(decodeVirtioFsConfig(encodeVirtioFsConfig({ tag, numRequestQueues })), { tag, numRequestQueues });
    }),
  );
});

// ---- Garbage. Each decoder gets random bytes of random length inside a larger buffer
// whose tail is random too: the result (or the error code) must not depend on the
// tail, i.e. the decoder never read past `len`.

type Decoder = (u8: Uint8Array, dv: DataView, len: number) => unknown;
const DECODERS: Record<string, Decoder> = {
  inHeader: (_u, dv, len) => decodeInHeader(dv, 0, len),
  initIn: (_u, dv, len) => decodeInitIn(dv, 0, len),
  initOut: (_u, dv, len) => decodeInitOut(dv, 0, len),
  entryOut: (_u, dv, len) => decodeEntryOut(dv, 0, len),
  attrOut: (_u, dv, len) => decodeAttrOut(dv, 0, len),
  openIn: (_u, dv, len) => decodeOpenIn(dv, 0, len),
  openOut: (_u, dv, len) => decodeOpenOut(dv, 0, len),
  readIn: (_u, dv, len) => decodeReadIn(dv, 0, len),
  releaseIn: (_u, dv, len) => decodeReleaseIn(dv, 0, len),
  getattrIn: (_u, dv, len) => decodeGetattrIn(dv, 0, len),
  forgetIn: (_u, dv, len) => decodeForgetIn(dv, 0, len),
  batchForgetIn: (_u, dv, len) => decodeBatchForgetIn(dv, 0, len),
  statfsOut: (_u, dv, len) => decodeStatfsOut(dv, 0, len),
  name: (u8, _dv, len) => decodeName(u8, 0, len),
  dirents: (u8, dv, len) => decodeDirents(u8, dv, 0, len),
  direntsPlus: (u8, dv, len) => decodeDirentsPlus(u8, dv, 0, len),
  outHeader: (_u, dv, len) => decodeOutHeader(dv, 0, len, 1, 7, { len: 0, error: 0, unique: 0 }),
};

function outcome(fn: () => unknown): unknown {
  try {
    return { ok: fn() };
  } catch (e) {
    if (!(e instanceof FuseCodecError)) throw e; // anything else fails the property
    return { err: e.code };
  }
}

for (const [name, decode] of Object.entries(DECODERS)) {
  test(`garbage: ${name} throws only FuseCodecError and stays within len`, (t) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), (bytes, tailA, tailB) => {
        const run = (tail: Uint8Array): unknown => {
          const u8 = new Uint8Array(bytes.length + tail.length);
          u8.set(bytes);
          u8.set(tail, bytes.length);
          return outcome(() => decode(u8, new DataView(u8.buffer), bytes.length));
        };
        t.deepEqual(run(tailA), run(tailB));
      }),
      { numRuns: 300 },
    );
  });
}

test('garbage dirents: structured entries with hostile lengths', (t) => {
  fc.assert(
    fc.property(fc.array(fc.record({ namelen: fc.integer({ min: 0, max: 400 }), type: u32, extra: fc.integer({ min: 0, max: 300 }) }), { maxLength: 5 }), (ents) => {
      const { u8, dv } = buf(4000);
      let pos = 0;
      for (const e of ents) {
        if (pos + 24 > 4000) break;
        dv.setUint32(pos + 16, e.namelen, true);
        dv.setUint32(pos + 20, e.type, true);
        pos += Math.min(24 + e.extra, 4000 - pos);
      }
      outcome(() => decodeDirents(u8, dv, 0, pos));
      t.pass();
    }),
  );
});
