// Property tests for both ring layouts, split (virtio 1.2, 2.7) and packed (2.8, with
// and without VIRTIO_F_IN_ORDER): random interleavings of add / publish / take / push /
// flush / drain with random chain shapes (direct and indirect), checked against a
// model: no token lost or returned twice, lengths and contents intact, no lost
// interrupt and no lost kick, with and without event suppression, across wrap-around.
import test from 'ava';
import fc from 'fast-check';
import { vringNeedEvent } from '../kernel/virtqueue/layout.js';
import { packedNeedEvent } from '../kernel/virtqueue/packed-layout.js';
import type { DescriptorChain } from '../kernel/virtqueue/descriptor-chain.js';
import type { RingLayout } from '../kernel/virtqueue/queue.js';
import { makeRingPair } from './support/ring-pair.js';

/** The layouts every property runs over. */
interface Config {
  layout: RingLayout;
  inOrder: boolean;
  title: string;
}
const CONFIGS: readonly Config[] = [
  { layout: 'split', inOrder: false, title: 'split' },
  { layout: 'packed', inOrder: false, title: 'packed' },
  { layout: 'packed', inOrder: true, title: 'packed, in order' },
];

/** The rule of 2.7.7.2 stated directly: is `event` one of old, old+1, ..., new-1 (mod 2^16)? */
function eventInWindow(event: number, newIdx: number, oldIdx: number): boolean {
  const n = (newIdx - oldIdx) & 0xffff;
  for (let k = 0; k < n; k++) if (((oldIdx + k) & 0xffff) === event) return true;
  return false;
}

test('vringNeedEvent matches the specification rule, including across wrap-around', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 300 }), (event, old, span) => {
      const newIdx = (old + span) & 0xffff;
      return vringNeedEvent(event, newIdx, old) === eventInWindow(event, newIdx, old);
    }),
    { numRuns: 20000 },
  );
  // Explicit wrap cases.
  t.true(vringNeedEvent(0xffff, 1, 0xfffe));
  t.true(vringNeedEvent(0, 1, 0xffff));
  t.false(vringNeedEvent(1, 1, 0xffff));
  t.false(vringNeedEvent(0xfffd, 1, 0xfffe));
});

test('packedNeedEvent matches the rule stated directly, across the wrap counter', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 }), fc.nat(), fc.nat(), fc.nat(), (size, e, o, s) => {
      const m = 2 * size;
      const event = e % m;
      const old = o % m;
      const span = s % (size + 1); // at most a ring's worth between two decisions
      const newL = (old + span) % m;
      let inWindow = false;
      for (let k = 0; k < span; k++) if ((old + k) % m === event) inWindow = true;
      return packedNeedEvent(event, newL, old, size) === inWindow;
    }),
    { numRuns: 20000 },
  );
  t.pass();
});

type Op =
  | { kind: 'add'; readable: number; writable: number; segLen: number; indirect: boolean }
  | { kind: 'publish' }
  | { kind: 'take'; n: number }
  | { kind: 'push'; pick: number; fraction: number }
  | { kind: 'flush' }
  | { kind: 'drain' }
  | { kind: 'irqOff' }
  | { kind: 'irqOn' }
  | { kind: 'irqOnDelayed' }
  | { kind: 'kickOn' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('add' as const), readable: fc.integer({ min: 0, max: 3 }), writable: fc.integer({ min: 0, max: 3 }), segLen: fc.integer({ min: 1, max: 64 }), indirect: fc.boolean() }),
  },
  { weight: 3, arbitrary: fc.constant({ kind: 'publish' as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('take' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('push' as const), pick: fc.nat(), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 3, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 3, arbitrary: fc.constant({ kind: 'drain' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'irqOff' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'irqOn' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'irqOnDelayed' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'kickOn' as const }) },
);

interface Expected {
  token: number;
  readable: number[];
  writable: number[];
  readableAddr: number;
  writableAddr: number;
}

function runScenario(config: Config, size: number, eventIdx: boolean, ops: Op[], repeat: number): void {
  const p = makeRingPair<number>(size, { layout: config.layout, inOrder: config.inOrder, eventIdx, memoryBytes: 4 << 20 });
  const { driver, device } = p;
  const [tableAddr, table] = p.buffer(16 * 6 * (size + 1)); // one indirect table slot per possible chain
  const [dataAddr, data] = p.buffer(2 << 20);
  let dataOff = 0;
  const region = (n: number): [number, number] => {
    if (dataOff + n > data.length) dataOff = 0;
    const r: [number, number] = [dataAddr + dataOff, dataOff];
    dataOff += n;
    return r;
  };
  let nextToken = 0;
  const byHead = new Map<number, Expected>(); // committed, not yet returned
  const held: DescriptorChain[] = []; // taken by the device, not pushed
  const pushed = new Map<number, number>(); // token -> written length, pushed not yet drained
  const returned = new Set<number>();
  const published = new Set<number>(); // tokens made visible to the device
  let committedNotPublished: number[] = [];
  let irqArmed = false; // driver re-enabled interrupts with nothing pending
  let kickArmed = false; // device re-enabled notifications with nothing pending
  let delayedArmed = false; // driver re-enabled interrupts for later, none seen since
  let pushedSinceFlush = 0;

  const check = (cond: boolean, msg: string): void => {
    if (!cond) throw new Error(msg);
  };

  for (let round = 0; round < repeat; round++) {
    for (const op of ops) {
      switch (op.kind) {
        case 'add': {
          const n = op.readable + op.writable;
          if (n === 0 || n > driver.numFree) break;
          const token = nextToken++;
          const e: Expected = { token, readable: [], writable: [], readableAddr: 0, writableAddr: 0 };
          // An indirect chain: its table in a slot of its own, one ring descriptor.
          const slot = token % (size + 1);
          const tv = new DataView(table.buffer, table.byteOffset + slot * 16 * 6, 16 * 6);
          const add = (addr: number, len: number, writable: boolean, i: number): void => {
            if (op.indirect) driver.writeIndirectEntry(tv, i, n, addr, len, writable);
            else driver.chainAdd(addr, len, writable);
          };
          driver.chainBegin();
          for (let i = 0; i < op.readable; i++) {
            const [addr, off] = region(op.segLen);
            data.fill((token + i) & 0xff, off, off + op.segLen);
            add(addr, op.segLen, false, i);
            e.readable.push(op.segLen);
          }
          for (let i = 0; i < op.writable; i++) {
            const [addr, off] = region(op.segLen);
            data.fill(0, off, off + op.segLen);
            add(addr, op.segLen, true, op.readable + i);
            e.writable.push(op.segLen);
          }
          if (op.indirect) driver.chainAddIndirect(tableAddr + slot * 16 * 6, n, op.writable * op.segLen);
          const head = driver.chainCommit(token);
          check(!byHead.has(head), `head ${head} handed out twice`);
          byHead.set(head, e);
          committedNotPublished.push(token);
          break;
        }
        case 'publish': {
          const hadNew = committedNotPublished.length > 0;
          const notify = driver.publish();
          for (const tk of committedNotPublished) published.add(tk);
          committedNotPublished = [];
          if (hadNew && kickArmed) {
            check(notify, 'lost kick: device enabled notifications with nothing pending, driver published and was not told to notify');
            kickArmed = false;
          }
          break;
        }
        case 'take': {
          for (let i = 0; i < op.n; i++) {
            const c = device.take();
            if (c === null) break;
            const e = byHead.get(c.head);
            check(e !== undefined, `device took head ${c.head} the driver never committed`);
            check(published.has(e!.token), `device took token ${e!.token} before it was published`);
            check(c.readableCount === e!.readable.length && c.writableCount === e!.writable.length, `chain shape of token ${e!.token} differs`);
            check(c.readableLength === e!.readable.reduce((a, b) => a + b, 0), 'readable length differs');
            // Content of readable segments.
            for (let s = 0; s < c.readableCount; s++) {
              const seg = c.segment(s);
              check(seg.every((b) => b === ((e!.token + s) & 0xff)), `readable segment ${s} of token ${e!.token} has wrong bytes`);
            }
            held.push(c);
          }
          break;
        }
        case 'push': {
          if (held.length === 0) break;
          // Out of order, unless VIRTIO_F_IN_ORDER was negotiated.
          const c = held.splice(config.inOrder ? 0 : op.pick % held.length, 1)[0]!;
          const e = byHead.get(c.head)!;
          const len = Math.floor(c.writableLength * op.fraction);
          const fill = Buffer.alloc(len, (e.token * 7) & 0xff);
          check(c.write(0, fill, 0, len) === len, 'write into writable part fell short');
          device.push(c, len);
          pushed.set(e.token, len);
          pushedSinceFlush++;
          break;
        }
        case 'flush': {
          const notify = device.flush();
          if (pushedSinceFlush > 0) {
            check(!irqArmed || notify, 'lost interrupt: driver re-enabled interrupts, device flushed new entries without notifying');
            irqArmed = false;
          }
          if (notify) delayedArmed = false;
          pushedSinceFlush = 0;
          break;
        }
        case 'drain': {
          driver.drainUsed((token, len) => {
            check(pushed.has(token), `driver got token ${token} the device never pushed`);
            check(!returned.has(token), `token ${token} returned twice`);
            check(pushed.get(token) === len, `token ${token}: length ${len}, device pushed ${pushed.get(token)}`);
            pushed.delete(token);
            returned.add(token);
            for (const [h, e] of byHead) {
              if (e.token === token) {
                byHead.delete(h);
                break;
              }
            }
          });
          break;
        }
        case 'irqOff':
          driver.disableInterrupts();
          irqArmed = delayedArmed = false;
          break;
        case 'irqOn':
          irqArmed = !driver.enableInterrupts();
          delayedArmed = false;
          break;
        case 'irqOnDelayed':
          delayedArmed = !driver.enableInterruptsDelayed();
          irqArmed = false;
          break;
        case 'kickOn':
          kickArmed = !device.enableNotifications();
          break;
      }
    }
    // Drain everything to close the round.
    if (driver.publish()) kickArmed = false;
    for (const tk of committedNotPublished) published.add(tk);
    committedNotPublished = [];
    let c: DescriptorChain | null;
    while ((c = device.take()) !== null) held.push(c);
    for (const h of held.splice(0)) {
      device.push(h, 0);
      pushed.set(byHead.get(h.head)!.token, 0);
      pushedSinceFlush++;
    }
    const finalNotify = device.flush();
    // Every chain outstanding when the driver asked for a delayed interrupt is used now.
    check(!delayedArmed || pushedSinceFlush === 0 || finalNotify, 'lost interrupt: a delayed interrupt request never fired though every outstanding chain was used');
    check(!irqArmed || pushedSinceFlush === 0 || finalNotify, 'lost interrupt at the end of the round');
    pushedSinceFlush = 0;
    irqArmed = delayedArmed = false;
    driver.drainUsed((token, len) => {
      check(pushed.get(token) === len && !returned.has(token), `final drain: token ${token}`);
      pushed.delete(token);
      returned.add(token);
      for (const [h, e] of byHead) if (e.token === token) byHead.delete(h);
    });
    check(driver.numFree === size, `after a full drain ${driver.numFree} of ${size} descriptors are free`);
    check(byHead.size === 0 && pushed.size === 0, 'chains unaccounted for');
    check(returned.size === nextToken, `${nextToken} tokens added, ${returned.size} returned`);
  }
  check(p.errors.length === 0, `device refused valid chains: ${p.errors.map((e) => e.message).join('; ')}`);
}

for (const config of CONFIGS) {
  test(`${config.title}: random interleavings keep driver and device consistent (event idx)`, (t) => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 4, 8, 16, 64), fc.array(opArb, { minLength: 1, maxLength: 200 }), (size, ops) => {
        runScenario(config, size, true, ops, 3);
      }),
      { numRuns: 300 },
    );
    t.pass();
  });

  test(`${config.title}: random interleavings keep driver and device consistent (flags, no event idx)`, (t) => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 4, 8, 32), fc.array(opArb, { minLength: 1, maxLength: 200 }), (size, ops) => {
        runScenario(config, size, false, ops, 3);
      }),
      { numRuns: 300 },
    );
    t.pass();
  });
}

for (const config of CONFIGS) {
  test(`${config.title}: indices and wrap counters wrap many times on both halves with correct notification decisions`, (t) => {
    for (const eventIdx of [true, false]) {
      for (const size of [2, 8]) {
        const p = makeRingPair<number>(size, { layout: config.layout, inOrder: config.inOrder, eventIdx });
        const [addr] = p.buffer(64);
        let token = 0;
        let lostIrq = 0;
        let lostKick = 0;
        let returned = 0;
        // 70,000 round trips in batches of 1..size/2 chains of 1..2 descriptors: split
        // indices pass 65535, packed positions wrap (chains straddling the ring's end).
        while (token < 70000) {
          const batch = 1 + (token % (p.driver.size / 2));
          const kickArmed = !p.device.enableNotifications();
          for (let i = 0; i < batch; i++) {
            p.driver.chainBegin();
            if ((token + i) % 3 !== 0 || size === 2) p.driver.chainAdd(addr, 8, false);
            p.driver.chainAdd(addr + 8, 8, true);
            p.driver.chainCommit(token++);
          }
          if (!p.driver.publish() && kickArmed) lostKick++;
          const irqArmed = !p.driver.enableInterrupts();
          let c;
          let n = 0;
          while ((c = p.device.take()) !== null) {
            p.device.push(c, 8);
            n++;
          }
          if (n !== batch) t.fail(`device took ${n} of ${batch}`);
          if (!p.device.flush() && irqArmed) lostIrq++;
          p.driver.drainUsed((tk, len) => {
            if (tk !== returned || len !== 8) t.fail(`token ${tk} (expected ${returned}), len ${len}`);
            returned++;
          });
        }
        t.is(returned, token, `size ${size} eventIdx ${eventIdx}`);
        t.is(lostIrq, 0, 'no lost interrupt');
        t.is(lostKick, 0, 'no lost kick');
        t.is(p.errors.length, 0);
        t.is(p.driver.numFree, size);
      }
    }
  });

  test(`${config.title}: with event idx, a device that keeps notifications off gets no kicks, and interrupts follow the driver's event`, (t) => {
    const p = makeRingPair<number>(8, { layout: config.layout, inOrder: config.inOrder, eventIdx: true });
    const [addr] = p.buffer(64);
    // Device enabled: first publish must notify.
    p.device.enableNotifications();
    p.driver.add(1, [], [[addr, 8]]);
    t.true(p.driver.publish());
    // Device does not move its event: later publishes are silent.
    p.driver.add(2, [], [[addr, 8]]);
    t.false(p.driver.publish());
    // Driver asks for an interrupt at the next used entry.
    t.false(p.driver.enableInterrupts());
    const a = p.device.take()!;
    p.device.push(a, 0);
    t.true(p.device.flush());
    // Driver has not consumed: its event stays behind, no new interrupt.
    const b = p.device.take()!;
    p.device.push(b, 0);
    t.false(p.device.flush());
    t.is(p.driver.drainUsed(() => {}), 2);
  });

  test(`${config.title}: a delayed interrupt request knows when the device is past it already, and fires otherwise`, (t) => {
    for (const usedBefore of [0, 1, 2, 5, 6, 7, 8]) {
      const p = makeRingPair<number>(8, { layout: config.layout, inOrder: config.inOrder, eventIdx: true });
      const [addr] = p.buffer(64);
      for (let i = 0; i < 8; i++) p.driver.add(i, [], [[addr, 8]]);
      p.driver.publish();
      p.driver.disableInterrupts();
      const taken = [];
      for (let c; (c = p.device.take()) !== null; ) taken.push(c);
      for (const c of taken.splice(0, usedBefore)) p.device.push(c, 8);
      p.device.flush();
      // 3/4 of 8 outstanding: the event is the 7th used chain.
      const already = p.driver.enableInterruptsDelayed();
      if (usedBefore > 6) t.true(already, `${usedBefore} of 8 used: past the event`);
      if (!already) {
        for (const c of taken) p.device.push(c, 8);
        t.true(p.device.flush(), `${usedBefore} used before: the rest brings the interrupt`);
      }
      t.is(p.driver.drainUsed(() => {}), usedBefore + (already ? 0 : 8 - usedBefore));
    }
  });

  test(`${config.title}: without event idx, disabling interrupts and notifications suppresses them, enabling brings them back`, (t) => {
    const p = makeRingPair<number>(8, { layout: config.layout, inOrder: config.inOrder, eventIdx: false });
    const [addr] = p.buffer(64);
    p.device.disableNotifications();
    p.driver.add(1, [], [[addr, 8]]);
    t.false(p.driver.publish(), 'no kick while the device said so');
    t.true(p.device.enableNotifications(), 'a chain arrived meanwhile');
    p.driver.add(2, [], [[addr, 8]]);
    t.true(p.driver.publish());
    p.driver.disableInterrupts();
    const a = p.device.take()!;
    p.device.push(a, 8);
    t.false(p.device.flush(), 'no interrupt while the driver said so');
    t.true(p.driver.enableInterrupts(), 'a used chain arrived meanwhile');
    const b = p.device.take()!;
    p.device.push(b, 8);
    t.true(p.device.flush());
    const got: number[] = [];
    p.driver.drainUsed((tk, len) => got.push(tk, len));
    t.deepEqual(got, [1, 8, 2, 8]);
  });
}
