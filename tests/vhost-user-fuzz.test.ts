// Replays random sequences of vhost-user messages (valid, hostile and garbage) with
// kicks and scribbles over the rings against one server, as a fuzz target: the server
// must never throw outside its error handling, must serve the next client after each
// sequence, and must leak no fd.
import test from 'ava';
import fc from 'fast-check';
import { once } from 'node:events';
import { ftruncateSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as n from '../kernel/native/index.js';
import { encodeConfig, encodeMemTable, encodeMessage, encodeU64, encodeVringAddr, encodeVringFile, encodeVringState, type MemoryRegionDescription } from '../kernel/vhost-user/codec.js';
import { VhostUserFrontend } from '../kernel/vhost-user/frontend-client.js';
import { Request } from '../kernel/vhost-user/protocol.js';
import { startVhostUserServer } from '../kernel/vhost-user/server.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit } from '../kernel/virtqueue/layout.js';
import { EchoDevice } from './support/echo-device.js';

const RAM = 0x400000;
const U0 = 0x7f0000000000;
const U1 = 0x7f1000000000;
const user = (gpa: number): number => (gpa < 0xa0000 ? U0 + gpa : U1 + gpa - 0xc0000);

type Action =
  | { kind: 'msg'; request: number; payload: Buffer; fds: ('ram' | 'kick' | 'call')[]; needReply: boolean }
  | { kind: 'kick' }
  /** A driver-like chain: desc 0 readable (len1) -> desc 1 writable (len2), published in the avail ring at 0x101000. */
  | { kind: 'chain'; len1: number; len2: number }
  | { kind: 'scribble'; offset: number; bytes: Uint8Array };

const index = fc.constantFrom(0, 0, 0, 1, 7, 255);
const goodRegions: MemoryRegionDescription[] = [
  { guestPhysAddr: 0, memorySize: 0xa0000, userspaceAddr: U0, mmapOffset: 0 },
  { guestPhysAddr: 0xc0000, memorySize: RAM - 0xc0000, userspaceAddr: U1, mmapOffset: 0xc0000 },
];
const tables = fc.constantFrom<MemoryRegionDescription[]>(
  goodRegions,
  [{ ...goodRegions[1]!, memorySize: RAM }], // does not fit the fd
  [goodRegions[0]!, { ...goodRegions[1]!, guestPhysAddr: 0x1000 }], // overlap
  [{ ...goodRegions[0]!, memorySize: 0 }],
  [{ ...goodRegions[1]!, mmapOffset: 0xc0001 }], // unaligned offset
);
const ringAddr = fc.constantFrom(user(0x100000), user(0x101000), user(0x102000), user(0x1000), U0 + 0xa0000, user(0x100008), user(RAM - 8), 0, 2 ** 52);
const features = fc.constantFrom(
  featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | (1n << 30n),
  featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC),
  featureBit(VIRTIO_F_VERSION_1) | (1n << 30n),
  1n << 61n,
);

const msg = (request: number, payload: Buffer, fds: ('ram' | 'kick' | 'call')[] = []) =>
  fc.boolean().map((needReply): Action => ({ kind: 'msg', request, payload, fds, needReply }));

const kickFd: ('kick')[] = ['kick'];
const callFd: ('call')[] = ['call'];
/** What QEMU sends to start ring 0 over a good table (ring at 0x100000/0x101000/0x102000). */
const GOOD_START: Action[] = [
  { kind: 'msg', request: Request.SET_FEATURES, payload: encodeU64(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX) | (1n << 30n)), fds: [], needReply: false },
  { kind: 'msg', request: Request.SET_MEM_TABLE, payload: encodeMemTable(goodRegions), fds: ['ram', 'ram'], needReply: true },
  { kind: 'msg', request: Request.SET_VRING_NUM, payload: encodeVringState(0, 128), fds: [], needReply: false },
  { kind: 'msg', request: Request.SET_VRING_ADDR, payload: encodeVringAddr({ index: 0, desc: user(0x100000), used: user(0x102000), avail: user(0x101000) }), fds: [], needReply: false },
  { kind: 'msg', request: Request.SET_VRING_KICK, payload: encodeVringFile(0), fds: kickFd, needReply: false },
  { kind: 'msg', request: Request.SET_VRING_CALL, payload: encodeVringFile(0), fds: callFd, needReply: false },
  { kind: 'msg', request: Request.SET_VRING_ENABLE, payload: encodeVringState(0, 1), fds: [], needReply: false },
];

const action: fc.Arbitrary<Action> = fc.oneof(
  fc.constantFrom(Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.SET_OWNER, Request.RESET_OWNER, Request.GET_QUEUE_NUM).chain((r) => msg(r, Buffer.alloc(0))),
  features.chain((f) => msg(Request.SET_FEATURES, encodeU64(f))),
  fc.constantFrom(0n, 8n, 0x208n, 1n).chain((p) => msg(Request.SET_PROTOCOL_FEATURES, encodeU64(p))),
  tables.chain((t) => msg(Request.SET_MEM_TABLE, encodeMemTable(t), t.map(() => 'ram' as const))),
  fc.tuple(index, fc.constantFrom(0, 1, 3, 64, 128, 256, 512)).chain(([i, num]) => msg(Request.SET_VRING_NUM, encodeVringState(i, num))),
  fc.tuple(index, ringAddr, ringAddr, ringAddr).chain(([i, d, u, a]) => msg(Request.SET_VRING_ADDR, encodeVringAddr({ index: i, desc: d, used: u, avail: a }))),
  fc.tuple(index, fc.nat({ max: 70000 })).chain(([i, b]) => msg(Request.SET_VRING_BASE, encodeVringState(i, b))),
  index.chain((i) => msg(Request.GET_VRING_BASE, encodeVringState(i, 0))),
  fc.tuple(index, fc.boolean()).chain(([i, nofd]) => msg(Request.SET_VRING_KICK, encodeVringFile(i, nofd), nofd ? [] : ['kick'])),
  fc.tuple(index, fc.boolean()).chain(([i, nofd]) => msg(Request.SET_VRING_CALL, encodeVringFile(i, nofd), nofd ? [] : ['call'])),
  fc.tuple(index, fc.nat({ max: 2 })).chain(([i, e]) => msg(Request.SET_VRING_ENABLE, encodeVringState(i, e))),
  fc.tuple(fc.nat({ max: 16 }), fc.nat({ max: 16 })).chain(([o, s]) => msg(Request.GET_CONFIG, encodeConfig(o, 0, new Uint8Array(s)))),
  fc.constant<Action>({ kind: 'kick' }),
  fc.record({ kind: fc.constant('chain' as const), len1: fc.constantFrom(0, 16, 4096, 0x100000), len2: fc.constantFrom(0, 16, 0x1000000) }),
  fc.record({ kind: fc.constant('scribble' as const), offset: fc.constantFrom(0x100000, 0x101000, 0x102000), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.tuple(fc.nat({ max: 45 }), fc.uint8Array({ maxLength: 48 }), fc.boolean()).chain(([r, p, withFd]) => msg(r, Buffer.from(p), withFd ? ['kick'] : [])),
);

test('random message sequences never crash the server, leak fds or stop it serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-vhost-fuzz-'));
  const fdsBefore = readdirSync('/proc/self/fd').length;
  const model = new EchoDevice(256);
  const server = await startVhostUserServer({ socketPath: join(dir, 's'), model, log: () => {}, memoryTableTimeoutMs: 60000 });
  const ramFd = n.memfdCreate('fuzz-ram');
  ftruncateSync(ramFd, RAM);
  const ram = new Uint8Array(n.mmap(ramFd, RAM, 0));
  const kick = n.eventfd();
  const call = n.eventfd();
  let sequences = 0;
  const seen = { ringsStarted: 0, protocolErrors: 0, echoed: 0 };
  server.on('ring-started', () => seen.ringsStarted++);
  server.on('protocol-error', () => seen.protocolErrors++);
  try {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(action, { minLength: 1, maxLength: 25 }), async (goodStart, random) => {
        const actions = goodStart ? [...GOOD_START, ...random] : random;
        ram.fill(0, 0x100000, 0x103000);
        const c = VhostUserFrontend.connect(join(dir, 's'));
        const gone = once(server, 'client-disconnected');
        try {
          for (const a of actions) {
            if (a.kind === 'kick') n.eventfdWrite(kick, 1);
            else if (a.kind === 'chain') {
              const dv = new DataView(ram.buffer, ram.byteOffset);
              dv.setBigUint64(0x100000, 0x1000n, true);
              dv.setUint32(0x100008, a.len1, true);
              dv.setUint32(0x10000c, 1 | (1 << 16), true); // NEXT, next = 1
              dv.setBigUint64(0x100010, 0x200000n, true);
              dv.setUint32(0x100018, a.len2, true);
              dv.setUint32(0x10001c, 2, true); // WRITE
              const idx = dv.getUint16(0x101002, true);
              dv.setUint16(0x101004 + 2 * (idx % 128), 0, true);
              dv.setUint16(0x101002, (idx + 1) & 0xffff, true);
              n.eventfdWrite(kick, 1);
            }
            else if (a.kind === 'scribble') ram.set(a.bytes, a.offset);
            else {
              const fds = a.fds.map((f) => (f === 'ram' ? ramFd : f === 'kick' ? kick : call));
              try {
                c.sendRaw(encodeMessage(a.request, a.needReply ? 9 : 1, a.payload), fds);
              } catch {
                break; // the server dropped us (EPIPE): the sequence ends here
              }
            }
            await new Promise((r) => setImmediate(r));
          }
        } finally {
          c.close();
        }
        await gone;
        n.eventfdRead(call);
        sequences++;
      }),
      { numRuns: 150 },
    );
    // Still serving.
    const c = VhostUserFrontend.connect(join(dir, 's'));
    t.true((await c.getFeatures()) !== 0n);
    c.close();
    await once(server, 'client-disconnected');
  } finally {
    await server.close();
    n.munmap(ram.buffer as ArrayBuffer);
    for (const fd of [ramFd, kick, call]) n.close(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  seen.echoed = model.echoed;
  t.log(`${sequences} sequences: ${JSON.stringify(seen)}`);
  t.is(sequences, 150);
  const open = readdirSync('/proc/self/fd');
  if (open.length !== fdsBefore) {
    const { readlinkSync } = await import('node:fs');
    t.log(open.map((fd) => { try { return `${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`; } catch { return fd; } }).join('\n'));
  }
  t.is(open.length, fdsBefore, 'no fd leaked');
});
