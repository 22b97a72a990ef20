// The vhost-user codec and framing: layouts round-trip, every malformed header or
// payload is refused with a VhostUserError (never another exception), and a message is
// read whole with its fds however the stream splits it.
import test from 'ava';
import fc from 'fast-check';

import { UnixFdSocket } from '../kernel/native/fd-watch.js';
import * as n from '../kernel/native/index.js';
import {
  checkHeader,
  decodeHeader,
  decodePayload,
  encodeConfig,
  encodeMemTable,
  encodeMessage,
  encodeU64,
  encodeVringAddr,
  encodeVringFile,
  encodeVringState,
  type VhostUserMessage,
} from '../kernel/vhost-user/codec.js';
import { VhostUserError } from '../kernel/vhost-user/errors.js';
import { closeFds, readMessage } from '../kernel/vhost-user/framing.js';
import { HEADER_SIZE, Request } from '../kernel/vhost-user/protocol.js';

function decode(bytes: Uint8Array, fds: number[] = []): VhostUserMessage {
  const h = decodeHeader(bytes);
  checkHeader(h);
  return decodePayload(h, bytes.subarray(HEADER_SIZE), fds);
}

const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (e instanceof VhostUserError) return e.code;
    throw e;
  }
  return 'ok';
};

test('payloads round-trip', (t) => {
  t.deepEqual(decode(encodeMessage(Request.GET_FEATURES, 1)).payload, { type: 'empty' });
  t.deepEqual(decode(encodeMessage(Request.SET_FEATURES, 1, encodeU64(0x1_4000_0000n))).payload, { type: 'u64', value: 0x1_4000_0000n });
  t.deepEqual(decode(encodeMessage(Request.SET_VRING_NUM, 1, encodeVringState(1, 128))).payload, { type: 'vring-state', index: 1, num: 128 });
  t.deepEqual(decode(encodeMessage(Request.SET_VRING_ADDR, 1, encodeVringAddr({ index: 1, desc: 0x7f0000001000, used: 0x7f0000003000, avail: 0x7f0000002000 }))).payload, {
    type: 'vring-addr',
    index: 1,
    flags: 0,
    desc: 0x7f0000001000,
    used: 0x7f0000003000,
    avail: 0x7f0000002000,
    log: 0,
  });
  const kick = decode(encodeMessage(Request.SET_VRING_KICK, 1, encodeVringFile(1)), [42]);
  t.deepEqual(kick.payload, { type: 'vring-file', index: 1, noFd: false, fd: 42 });
  t.deepEqual(kick.fds, [42], 'the fd stays in fds until a handler claims it');
  t.deepEqual(decode(encodeMessage(Request.SET_VRING_CALL, 1, encodeVringFile(0, true))).payload, { type: 'vring-file', index: 0, noFd: true, fd: -1 });
  const regions = [
    { guestPhysAddr: 0, memorySize: 0xa0000, userspaceAddr: 0x7f0000000000, mmapOffset: 0 },
    { guestPhysAddr: 0xc0000, memorySize: 0x3ff40000, userspaceAddr: 0x7f00000c0000, mmapOffset: 0xc0000 },
  ];
  const m = decode(encodeMessage(Request.SET_MEM_TABLE, 9, encodeMemTable(regions)), [7, 8]);
  t.deepEqual(m.payload, { type: 'mem-table', regions });
  t.deepEqual(m.fds, [7, 8]);
  t.true(m.needReply);
  const c = decode(encodeMessage(Request.GET_CONFIG, 1, encodeConfig(0, 0, new Uint8Array(8))));
  t.like(c.payload, { type: 'config', offset: 0, size: 8, flags: 0 });
});

test('headers and payloads that are wrong are refused with a code naming what', (t) => {
  t.is(code(() => decode(encodeMessage(Request.GET_FEATURES, 0))), 'ERR_VHOST_USER_VERSION');
  t.is(code(() => decode(encodeMessage(Request.GET_FEATURES, 1 | 0x10))), 'ERR_VHOST_USER_FLAGS');
  t.is(code(() => decode(encodeMessage(Request.GET_FEATURES, 1 | 0x4))), 'ERR_VHOST_USER_FLAGS'); // REPLY on a request
  t.is(code(() => decode(encodeMessage(0, 1))), 'ERR_VHOST_USER_UNKNOWN_REQUEST');
  t.is(code(() => decode(encodeMessage(1000, 1))), 'ERR_VHOST_USER_UNKNOWN_REQUEST');
  t.is(code(() => decode(encodeMessage(Request.GET_FEATURES, 1, encodeU64(0)))), 'ERR_VHOST_USER_SIZE');
  t.is(code(() => decode(encodeMessage(Request.SET_VRING_ADDR, 1, Buffer.alloc(32)))), 'ERR_VHOST_USER_SIZE');
  t.is(code(() => decode(encodeMessage(Request.SET_MEM_TABLE, 1, Buffer.alloc(8 + 9 * 32)))), 'ERR_VHOST_USER_SIZE');
  t.is(code(() => decode(encodeMessage(Request.SET_MEM_TABLE, 1, Buffer.alloc(8 + 31)))), 'ERR_VHOST_USER_SIZE');
  t.is(code(() => decode(encodeMessage(Request.SET_VRING_KICK, 1, encodeVringFile(0)))), 'ERR_VHOST_USER_FDS');
  t.is(code(() => decode(encodeMessage(Request.SET_VRING_KICK, 1, encodeVringFile(0, true)), [5])), 'ERR_VHOST_USER_FDS');
  t.is(code(() => decode(encodeMessage(Request.SET_VRING_KICK, 1, encodeU64(0x200)), [5])), 'ERR_VHOST_USER_PAYLOAD');
  t.is(code(() => decode(encodeMessage(Request.GET_FEATURES, 1), [5])), 'ERR_VHOST_USER_FDS');
  const one = [{ guestPhysAddr: 0, memorySize: 0x1000, userspaceAddr: 0x1000, mmapOffset: 0 }];
  t.is(code(() => decode(encodeMessage(Request.SET_MEM_TABLE, 1, encodeMemTable(one)), [5, 6])), 'ERR_VHOST_USER_FDS');
  t.is(code(() => decode(encodeMessage(Request.SET_MEM_TABLE, 1, encodeMemTable(one)))), 'ERR_VHOST_USER_MEMORY_NOT_SHARED');
  t.is(code(() => decode(encodeMessage(Request.SET_MEM_TABLE, 1, Buffer.alloc(8)))), 'ERR_VHOST_USER_MEMORY_NOT_SHARED');
  const huge = encodeMemTable(one);
  huge.writeBigUInt64LE(1n << 60n, 8 + 8); // memory_size beyond 2^53
  t.is(code(() => decode(encodeMessage(Request.SET_MEM_TABLE, 1, huge), [5])), 'ERR_VHOST_USER_PAYLOAD');
  const cfg = encodeConfig(0, 0, new Uint8Array(8));
  cfg.writeUInt32LE(9, 4); // claims 9 bytes, carries 8
  t.is(code(() => decode(encodeMessage(Request.GET_CONFIG, 1, cfg))), 'ERR_VHOST_USER_SIZE');
  t.is(code(() => decodeHeader(new Uint8Array(5))), 'ERR_VHOST_USER_TRUNCATED');
});

test('property: any bytes decode to a message or a VhostUserError, nothing else', (t) => {
  const requests = fc.oneof(fc.integer({ min: 0, max: 45 }), fc.nat());
  fc.assert(
    fc.property(requests, fc.nat({ max: 0x1f }), fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 3 }), (request, flags, body, nfds) => {
      const bytes = encodeMessage(request, flags, body);
      const fds = Array.from({ length: nfds }, (_, i) => 100 + i);
      try {
        decode(bytes, fds);
      } catch (e) {
        if (!(e instanceof VhostUserError)) throw e;
        if (e.message.length === 0) throw new Error('empty error message');
      }
    }),
    { numRuns: 3000 },
  );
  t.pass();
});

test('property: framing reads a message whole, with its fds, however the stream splits it', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 10 }), async (cuts) => {
      const [a, b] = n.unixSocketPair();
      const reader = new UnixFdSocket(b);
      const ev = n.eventfd();
      try {
        const regions = [
          { guestPhysAddr: 0, memorySize: 0xa0000, userspaceAddr: 0x7f0000000000, mmapOffset: 0 },
          { guestPhysAddr: 0xc0000, memorySize: 0x100000, userspaceAddr: 0x7f00000c0000, mmapOffset: 0xc0000 },
        ];
        const first = encodeMessage(Request.SET_MEM_TABLE, 1, encodeMemTable(regions));
        const second = encodeMessage(Request.SET_VRING_KICK, 1, encodeVringFile(1));
        // The first message in pieces (fds with its first byte), then the second with its fd.
        let off = 0;
        let withFds = true;
        const pending = readMessage(reader);
        for (const cut of cuts) {
          if (off >= first.length) break;
          const piece = first.subarray(off, Math.min(first.length, off + cut));
          t.is(n.sendMsg(a, piece, withFds ? [ev, ev] : []), piece.length);
          withFds = false;
          off += piece.length;
          await new Promise((r) => setImmediate(r));
        }
        if (off < first.length) n.sendMsg(a, first.subarray(off), withFds ? [ev, ev] : []);
        n.sendMsg(a, second, [ev]);
        const m1 = await pending;
        const m2 = await readMessage(reader);
        try {
          t.is(m1?.request, Request.SET_MEM_TABLE);
          t.is(m1?.fds.length, 2);
          t.deepEqual(m1?.payload, { type: 'mem-table', regions });
          t.is(m2?.request, Request.SET_VRING_KICK);
          t.like(m2?.payload, { type: 'vring-file', index: 1, noFd: false });
          t.is(m2?.fds.length, 1);
        } finally {
          closeFds(m1?.fds ?? []);
          closeFds(m2?.fds ?? []);
        }
        n.close(a);
        t.is(await readMessage(reader), null); // clean end of stream between messages
      } finally {
        reader.close();
        n.close(ev);
        try {
          n.close(a);
        } catch {
          // closed above
        }
      }
    }),
    { numRuns: 30 },
  );
});

test('framing: a stream that ends inside a message is a truncation error', async (t) => {
  const [a, b] = n.unixSocketPair();
  const reader = new UnixFdSocket(b);
  try {
    n.sendMsg(a, encodeMessage(Request.SET_FEATURES, 1, encodeU64(1)).subarray(0, 15));
    n.close(a);
    const err = await t.throwsAsync(readMessage(reader));
    t.is((err as VhostUserError).code, 'ERR_VHOST_USER_TRUNCATED');
    t.regex(err!.message, /SET_FEATURES/);
  } finally {
    reader.close();
  }
});
