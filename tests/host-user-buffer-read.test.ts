// host/user-buffer-read.ts: sockets a server accepted, and sockets we connected, read
// into one reused buffer (no Buffer per read); returning false pauses, resume() goes on,
// 'end' still comes, and the bytes arrive whole and in order.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { type AddressInfo, Socket as NetSocket, type Socket, connect, createServer } from 'node:net';
import { adoptUserBuffer } from '../drivers/virtio-vsock/host/user-buffer-read.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A loopback server and a client connected to it: [accepted, connected]. */
async function pair(t: { teardown(f: () => void): void }): Promise<[Socket, Socket]> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  t.teardown(() => server.close());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await once(client, 'connect');
  const [s] = await accepted;
  t.teardown(() => {
    s.destroy();
    client.destroy();
  });
  return [s, client];
}

/** Reads `s` through adoptUserBuffer until 'end'; pauses after every `pauseEvery`th read for a tick. */
function readAll(s: Socket, scratch: Buffer, pauseEvery: number): Promise<{ bytes: Buffer; reads: number; foreign: number }> {
  const parts: Buffer[] = [];
  let reads = 0;
  let foreign = 0;
  const ok = adoptUserBuffer(s, scratch, (bytes, n) => {
    if (bytes.buffer !== scratch.buffer) foreign++;
    parts.push(Buffer.from(bytes.subarray(0, n))); // valid only during the call
    reads++;
    if (reads % pauseEvery !== 0) return true;
    setImmediate(() => s.resume());
    return false;
  });
  if (!ok) throw new Error('adoptUserBuffer refused a connected socket');
  s.resume();
  return new Promise((resolve) => s.once('end', () => resolve({ bytes: Buffer.concat(parts), reads, foreign })));
}

test('an accepted socket reads into the given buffer: bytes whole and in order, pauses and resumes, then end', async (t) => {
  const [accepted, client] = await pair(t);
  const data = randomBytes(3 << 20);
  const scratch = Buffer.alloc(16 * 1024);
  const reading = readAll(accepted, scratch, 3);
  client.end(data);
  const got = await reading;
  t.is(got.bytes.length, data.length);
  t.is(sha(got.bytes), sha(data));
  t.is(got.foreign, 0, 'every read was a view of the one buffer');
  t.true(got.reads >= data.length / scratch.length, `${got.reads} reads of at most ${scratch.length} bytes`);
});

test('a connected socket reads into the given buffer too', async (t) => {
  const [accepted, client] = await pair(t);
  const data = randomBytes(1 << 20);
  const reading = readAll(client, Buffer.alloc(64 * 1024), 2);
  accepted.resume();
  accepted.end(data);
  const got = await reading;
  t.is(sha(got.bytes), sha(data));
  t.is(got.foreign, 0);
});

test('a socket without a handle (never connected) is refused', (t) => {
  const unconnected = new NetSocket();
  t.false(adoptUserBuffer(unconnected, Buffer.alloc(16), () => true));
  unconnected.destroy();
});
