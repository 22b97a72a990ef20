// Host bytes for the guest that come from a socket read into a reused buffer: the
// device copies them into recycled blocks (host-block-pool.ts) or, when few, a slice of
// Node's pool; writers pause while the queues are full; every block goes back once its
// bytes are in the guest's rx buffers; a few bytes into a quiet connection reach the
// guest's rx ring before writeCopied() returns.
import test from 'ava';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HOST_TO_GUEST_QUEUE_LIMIT_BYTES } from '../drivers/virtio-vsock/device/constants.js';
import { HOST_BLOCK_BYTES, HostBlockPool, threadHostBlocks } from '../drivers/virtio-vsock/device/host-block-pool.js';
import type { VsockHostSocket } from '../drivers/virtio-vsock/device/host-socket.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { spliceStreams } from '../drivers/virtio-vsock/host/splice.js';
import { RawStream, VsockRawDriver } from './support/vsock-raw-driver.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

test('the pool: a block is never handed out twice while taken, comes back for reuse, and is trimmed when nothing is in use', (t) => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constant('take' as const), fc.nat(40)), { maxLength: 300 }), (ops) => {
      const pool = new HostBlockPool(4 * HOST_BLOCK_BYTES);
      const out: Buffer[] = [];
      for (const op of ops) {
        if (op === 'take') {
          const b = pool.take();
          if (b.length !== HOST_BLOCK_BYTES || !pool.owns(b)) return false;
          out.push(b);
        } else if (out.length > 0) {
          const [b] = out.splice(op % out.length, 1);
          pool.give(op % 2 === 0 ? b! : b!.subarray(0, 1 + (op % 100))); // a queued chunk is a block or its start
        }
        if (pool.blocksInUse !== out.length) return false;
        if (out.length === 0 && pool.freeBlocks > 4) return false;
        // No two blocks taken and not given back share bytes.
        const starts = new Map<ArrayBufferLike, Set<number>>();
        for (const b of out) {
          const seen = starts.get(b.buffer) ?? new Set<number>();
          if (seen.has(b.byteOffset)) return false;
          seen.add(b.byteOffset);
          starts.set(b.buffer, seen);
        }
      }
      return true;
    }),
  );
  const pool = new HostBlockPool();
  const a = pool.take();
  pool.give(a.subarray(0, 10));
  const again = pool.take();
  t.is(again.buffer, a.buffer);
  t.is(again.byteOffset, a.byteOffset, 'the block given back is the next one taken');
  t.false(pool.owns(Buffer.alloc(HOST_BLOCK_BYTES)));
});

interface Fixture {
  dev: VsockDevice;
  drv: VsockRawDriver;
  guest: RawStream;
  vs: VsockHostSocket;
  /** The host program's end (a Unix socket whose peer the daemon-side splice reads). */
  client: Socket;
}

/** A guest stream to host port 80, spliced to a Unix socket as the daemon does; the test writes into `client`. */
async function fixture(t: { teardown(f: () => void | Promise<void>): void }, guestPort: number, guestWindow: number): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-blocks-'));
  const path = join(dir, 'host.sock');
  const dev = new VsockDevice({ guestCid: 3 });
  const drv = VsockRawDriver.sameThread(dev, { queueSize: 256, rxBuffers: 128, rxBufferBytes: 4096 + 44 });
  const server = createServer({ allowHalfOpen: true });
  server.listen(path);
  await once(server, 'listening');
  t.teardown(async () => {
    server.close();
    await drv.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const vsP = new Promise<VsockHostSocket>((resolve) => {
    const l = dev.host.listen(80, (s) => {
      l.close();
      resolve(s);
    });
  });
  const guest = new RawStream(drv, guestPort, 80, guestWindow);
  await guest.connect();
  const vs = await vsP;
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect({ path, allowHalfOpen: true });
  const [hostEnd] = await accepted;
  spliceStreams(hostEnd, vs);
  t.teardown(() => {
    client.destroy();
    hostEnd.destroy();
  });
  return { dev, drv, guest, vs, client };
}

test.serial('bytes of any write sizes reach the guest whole and in order; every block comes back', async (t) => {
  const sizes = fc.sample(fc.oneof(fc.integer({ min: 1, max: 4000 }), fc.integer({ min: 4096, max: 200_000 })), { numRuns: 60, seed: 1205 });
  const data = randomBytes(sizes.reduce((a, b) => a + b, 0));
  const inUseBefore = threadHostBlocks().blocksInUse;
  const f = await fixture(t, 5000, 256 * 1024);
  let off = 0;
  for (const n of sizes) {
    if (!f.client.write(data.subarray(off, off + n))) await once(f.client, 'drain');
    off += n;
  }
  f.client.end();
  const got = await f.guest.readAll();
  t.is(got.length, data.length);
  t.is(sha(got), sha(data));
  t.is(f.guest.windowViolations, 0);
  t.is(f.dev.stats.hostBytesCopied, data.length, 'every byte came through the reused read buffer');
  t.is(f.dev.stats.hostBytesAsWritten, 0);
  t.is(threadHostBlocks().blocksInUse, inUseBefore, 'every block went back to the pool');
});

test.serial('a guest that does not read: the host socket pauses at the queue limit, nothing is lost, and it goes on when the guest reads', async (t) => {
  const f = await fixture(t, 5001, 256 * 1024);
  f.drv.pauseRx(true);
  const data = randomBytes(4 << 20);
  const writing = new Promise<void>((resolve) => f.client.end(data, resolve));
  // The device's queue for this connection stops near its limit (one read past it at most).
  // Nothing reaches the paused guest, so look again on a timer, not on its interrupts.
  while (f.dev.hostToGuestQueuedBytes < HOST_TO_GUEST_QUEUE_LIMIT_BYTES) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  t.true(f.dev.hostToGuestQueuedBytes < HOST_TO_GUEST_QUEUE_LIMIT_BYTES + 64 * 1024 + HOST_BLOCK_BYTES, `${f.dev.hostToGuestQueuedBytes} bytes queued`);
  f.drv.pauseRx(false);
  const got = await f.guest.readAll();
  await writing;
  t.is(sha(got), sha(data));
  t.is(f.dev.hostToGuestQueuedBytes, 0);
});

test.serial('a few bytes into a quiet connection are in the guest rx ring before writeCopied returns; bulk waits for the turn', async (t) => {
  const f = await fixture(t, 5002, 256 * 1024);
  const resume = (): void => {};
  const before = f.dev.stats.rxPackets;
  t.true(f.vs.writeCopied(Buffer.from('ping'), 4, resume));
  t.is(f.dev.stats.rxPackets, before + 1, 'written now');
  await f.drv.until(() => f.guest.rxCnt === 4);
  const bulk = f.dev.stats.rxPackets;
  t.true(f.vs.writeCopied(randomBytes(8192), 8192, resume));
  t.is(f.dev.stats.rxPackets, bulk, 'bulk goes with the next turn');
  await f.drv.until(() => f.guest.rxCnt === 4 + 8192);
  t.is(Buffer.concat(f.guest.received).subarray(0, 4).toString(), 'ping');
});
