// Guest program: our vsock driver (drivers/virtio-vsock/driver) talking to another guest
// of the same vhost-user-vsock daemon (sibling routing, --vm ...,group=NAME), a stock
// Linux guest in tests/appliance-linux-siblings.test.ts. Both ways, stream and SEQPACKET:
//   - serves a stream echo on port 1234 and a SEQPACKET echo (one message back per
//     message) on port 1235, for the peer's socat and vsock-seqpacket-peer;
//   - connects to the peer's stream echo (port 2000) and sends --bytes pattern bytes,
//     then to its SEQPACKET echo (port 2001) and sends one message per --sizes entry.
//
//   node /app/main.js --peer=CID --bytes=N --sizes=A,B,...
//
// Prints `vsock-sibling-peer: listening on cid <cid>` when its servers are up, and
// `vsock-sibling-peer-result: {json}` once both transfers it started are done and both
// servers saw their connection close.
import { createHash } from 'node:crypto';
import { boot } from '../../kernel/guest/boot.js';
import { VsockDriver } from '../../drivers/virtio-vsock/driver/driver.js';
import type { VsockSocket } from '../../drivers/virtio-vsock/driver/socket.js';
import { pattern } from './pattern.js';

const VIRTIO_ID_VSOCK = 19;
const STREAM_ECHO_PORT = 1234;
const SEQPACKET_ECHO_PORT = 1235;
const PEER_STREAM_PORT = 2000;
const PEER_SEQPACKET_PORT = 2001;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Connects, retrying while the peer's listener is not up yet (ECONNREFUSED; a poll, bounded). */
async function connectRetry(driver: VsockDriver, cid: number, port: number, type: 'stream' | 'seqpacket'): Promise<VsockSocket> {
  for (let i = 0; ; i++) {
    const s = driver.connect({ cid, port, type, allowHalfOpen: true });
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      s.once('connect', () => resolve(null));
      s.once('error', resolve);
    });
    if (err === null) return s;
    if (err.code !== 'ECONNREFUSED' || i >= 1200) throw err;
    await pause(250);
  }
}

/** Stream: writes `data`, ends, reads the echo to its end. */
async function streamRoundTrip(s: VsockSocket, data: Buffer): Promise<Buffer> {
  const parts: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
  s.end(data);
  const back = await done;
  s.destroy();
  return back;
}

/** SEQPACKET: each message in turn, waiting for it to come back whole. Returns the indexes that did not. */
async function messageRoundTrips(s: VsockSocket, sizes: number[]): Promise<number[]> {
  const bad: number[] = [];
  for (const [m, size] of sizes.entries()) {
    const msg = pattern(100 + m, size);
    const back = await new Promise<Buffer>((resolve, reject) => {
      s.once('data', resolve);
      s.once('error', reject);
      s.write(msg);
    });
    if (!back.equals(msg)) bad.push(m);
  }
  s.destroy();
  return bad;
}

boot(
  'vsock-sibling-peer',
  async (ctx) => {
    const arg = (name: string): string | undefined => ctx.args.find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3);
    const peer = Number(arg('peer') ?? 3);
    const bytes = Number(arg('bytes') ?? 1 << 20);
    const sizes = (arg('sizes') ?? '1,4096,65537').split(',').map(Number);
    if (![peer, bytes, ...sizes].every((n) => Number.isSafeInteger(n) && n > 0)) throw new RangeError(`bad arguments: ${ctx.args.join(' ')}`);
    const t = ctx.openVirtioDevice(VIRTIO_ID_VSOCK, { interrupts: 'uio' });
    const driver = await VsockDriver.start(t);
    const passive = { streamBytes: 0, messages: [] as number[] };
    const streamClosed = new Promise<void>((resolve) => {
      driver
        .createServer({ allowHalfOpen: true }, (s) => {
          s.on('data', (d: Buffer) => {
            passive.streamBytes += d.length;
            s.write(d);
          });
          s.on('end', () => s.end());
          s.on('error', (e: Error) => ctx.log(`stream echo: ${e.message}`));
          s.on('close', () => resolve());
        })
        .listen(STREAM_ECHO_PORT);
    });
    const seqClosed = new Promise<void>((resolve) => {
      driver
        .createServer({ type: 'seqpacket', allowHalfOpen: true }, (s) => {
          s.on('data', (m: Buffer) => {
            passive.messages.push(m.length);
            s.write(m);
          });
          s.on('end', () => s.end());
          s.on('error', (e: Error) => ctx.log(`seqpacket echo: ${e.message}`));
          s.on('close', () => resolve());
        })
        .listen(SEQPACKET_ECHO_PORT);
    });
    ctx.log(`listening on cid ${driver.localCid}`);
    const data = pattern(1, bytes);
    const back = await streamRoundTrip(await connectRetry(driver, peer, PEER_STREAM_PORT, 'stream'), data);
    const badMessages = await messageRoundTrips(await connectRetry(driver, peer, PEER_SEQPACKET_PORT, 'seqpacket'), sizes);
    await Promise.all([streamClosed, seqClosed]);
    const result = {
      cid: driver.localCid,
      stream: { sent: bytes, sentSha256: sha256(data), back: back.length, backSha256: sha256(back) },
      seqpacket: { sent: sizes.length, bad: badMessages },
      passive,
    };
    process.stdout.write(`vsock-sibling-peer-result: ${JSON.stringify(result)}\n`);
    driver.close();
    return 0;
  },
  { dmaPages: 16 },
);
