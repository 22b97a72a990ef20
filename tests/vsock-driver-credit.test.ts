// Credit arithmetic (virtio 1.2, 5.10.6.3) as properties, across u32 wrap-around, and
// the small bookkeeping pieces of the driver (ports, connection table).
import test from 'ava';
import fc from 'fast-check';
import { CreditState, CREDIT_UPDATE_THRESHOLD_BYTES } from '../drivers/virtio-vsock/driver/credit.js';
import { ConnectionTable } from '../drivers/virtio-vsock/driver/connection-table.js';
import { PortAllocator } from '../drivers/virtio-vsock/driver/port-allocator.js';

test('a sender never has more than min(peer_buf_alloc, buf_alloc) unacknowledged, across u32 wrap', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }), // starting tx_cnt (near the wrap)
      fc.integer({ min: 1, max: 1 << 22 }), // our buf_alloc
      fc.array(fc.tuple(fc.integer({ min: 0, max: 1 << 22 }), fc.integer({ min: 0, max: 1 << 20 }), fc.integer({ min: 0, max: 1 << 20 })), { maxLength: 60 }),
      (start, bufAlloc, steps) => {
        const c = new CreditState(bufAlloc);
        c.txCnt = start >>> 0;
        let peerFwd = start >>> 0;
        let peerBuf = 0;
        for (const [pb, send, ack] of steps) {
          peerBuf = pb;
          c.onPeerHeader(peerBuf, peerFwd);
          const credit = c.sendCredit();
          const window = Math.min(peerBuf, bufAlloc);
          const inFlight = (c.txCnt - peerFwd) >>> 0;
          if (credit < 0 || inFlight + credit > Math.max(window, inFlight)) return false;
          c.onSent(Math.min(send, credit));
          // The peer acknowledges some of what is in flight.
          const nowInFlight = (c.txCnt - peerFwd) >>> 0;
          peerFwd = (peerFwd + Math.min(ack, nowInFlight)) >>> 0;
        }
        return true;
      },
    ),
  );
  t.pass();
});

test('a receiver accepts exactly what it advertised and tells the peer as it consumes', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 1 << 17 }), fc.integer({ min: 0, max: 1 << 17 })), { maxLength: 80 }),
      (start, steps) => {
        const bufAlloc = 256 * 1024;
        const c = new CreditState(bufAlloc);
        c.rxCnt = c.fwdCnt = c.lastSentFwdCnt = start >>> 0;
        let unconsumed = 0;
        for (const [arrive, consume] of steps) {
          const peerMay = c.peerViewOfFreeSpace(); // what a correct peer may send
          const n = Math.min(arrive, peerMay);
          if (!c.onReceived(n)) return false; // within the advertised credit: always accepted
          unconsumed += n;
          unconsumed -= Math.min(consume, unconsumed);
          c.setUnconsumed(unconsumed);
          if (c.needsCreditUpdate()) {
            c.onHeaderSent();
            // After an update the peer sees at least the threshold free.
            if (c.peerViewOfFreeSpace() < Math.min(CREDIT_UPDATE_THRESHOLD_BYTES, bufAlloc / 2)) return false;
          }
        }
        // More than the free space is refused.
        return !c.onReceived(bufAlloc - unconsumed + 1);
      },
    ),
  );
  t.pass();
});

test('port allocator: round robin over the range, skipping ports in use', (t) => {
  const p = new PortAllocator(10, 13);
  const used = new Set([11]);
  const got = [p.allocate((x) => used.has(x)), p.allocate((x) => used.has(x)), p.allocate((x) => used.has(x)), p.allocate((x) => used.has(x))];
  t.deepEqual(got, [10, 12, 13, 10]);
  t.throws(() => p.allocate(() => true), { code: 'EADDRNOTAVAIL' });
  t.throws(() => new PortAllocator(5, 4));
});

test('connection table: keyed by local port and remote (cid, port)', (t) => {
  const tab = new ConnectionTable<string>();
  tab.add(1000, 2, 50, 'a');
  tab.add(1000, 2, 51, 'b');
  tab.add(1000, 3, 50, 'c');
  t.is(tab.size, 3);
  t.is(tab.get(1000, 2, 50), 'a');
  t.is(tab.get(1000, 3, 50), 'c');
  t.is(tab.get(1001, 2, 50), undefined);
  t.true(tab.hasLocalPort(1000));
  t.false(tab.delete(1000, 2, 50, 'zzz'), 'only the same connection is removed');
  t.true(tab.delete(1000, 2, 50, 'a'));
  t.true(tab.delete(1000, 2, 51, 'b'));
  t.true(tab.delete(1000, 3, 50, 'c'));
  t.false(tab.hasLocalPort(1000));
  t.is(tab.size, 0);
});
