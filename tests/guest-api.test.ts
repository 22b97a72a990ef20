// tsvirtio/guest (appliance/runtime/guest.ts) over the runtime built from our drivers and
// in-process devices (the vsock device in this thread, the virtio-fs device in a worker
// serving a temp folder), as a program sees it: listen/createServer with a host client,
// serve() with node:http, connect() to a host listener, the shared folders with
// fs/promises shapes, share(tag), txMode/cid/allocBuffer, exit(), and the errors when
// no runtime is installed or no folder shared.
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { VirtioFsDriver } from '../drivers/virtio-fs/driver/index.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import * as guest from '../appliance/runtime/guest.js';
import { createGuestRuntime } from '../appliance/runtime/guest-runtime.js';
import { installRuntime } from '../appliance/runtime/runtime-api.js';

const GUEST_CID = 5;
const fsDevice = new URL('../drivers/virtio-fs/device/worker-device.js', import.meta.url);

let root = '';
let stop: () => Promise<void> = async () => {};
let device: VsockDevice;
const exits: number[] = [];

class ExitCalled extends Error {}

test.before(async () => {
  root = mkdtempSync(join(tmpdir(), 'guest-api-'));
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'hello.txt'), 'hello from the share\n');
  writeFileSync(join(root, 'sub', 'data.bin'), Buffer.alloc(70_000, 7));
  device = new VsockDevice({ guestCid: GUEST_CID });
  const vsockTransport = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const fsTransport = await InProcessTransport.worker({ module: fsDevice, options: { root, tag: 'site' } }, { memoryBytes: 32 << 20 });
  const vsock = await VsockDriver.start(vsockTransport, { connectTimeoutMs: 300_000 });
  const fs = await VirtioFsDriver.start(fsTransport, { chunkCount: 16 });
  installRuntime(
    createGuestRuntime({
      vsock,
      shares: [fs],
      exit: (status) => {
        exits.push(status);
        throw new ExitCalled(`exit ${status}`);
      },
    }),
  );
  stop = async () => {
    installRuntime(null);
    await fs.close();
    vsock.close();
    await fsTransport.close();
    await vsockTransport.close();
  };
});

test.after.always(async () => {
  await stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** What a socket receives until its end; then it is ended too (a later reset is ignored). */
function collectBytes(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('error', reject);
    s.once('end', () => {
      s.off('error', reject).on('error', () => {});
      s.end();
      resolve(Buffer.concat(parts));
    });
  });
}

const collect = async (s: Duplex): Promise<string> => (await collectBytes(s)).toString();

test.serial('inGuest, cid, txMode and the host CID', (t) => {
  t.true(guest.inGuest());
  t.is(guest.cid(), GUEST_CID);
  t.is(guest.txMode(), 'auto');
  t.is(guest.HOST_CID, 2);
});

test.serial('listen(port, onConnection): a net.Server-shaped server; the host connects and gets an echo', async (t) => {
  const server = guest.listen(7001, (socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => server.once('listening', resolve));
  t.deepEqual(server.address(), { cid: GUEST_CID, port: 7001, family: 'vsock' });
  const host = await device.host.connect(7001, { timeoutMs: 300_000 });
  const back = collect(host);
  host.end('ping over vsock');
  t.is(await back, 'ping over vsock');
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test.serial('createServer().listen(port), as net.createServer', async (t) => {
  const server = guest.createServer((socket) => socket.end(`you are ${socket.remoteAddress}`));
  await new Promise<void>((resolve) => server.listen(7002, resolve));
  const host = await device.host.connect(7002, { timeoutMs: 300_000 });
  t.is(await collect(host), 'you are vsock:2');
  server.close();
});

test.serial('serve(http.Server, port): node:http answers over vsock; server.close() stops the vsock listener', async (t) => {
  const app = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ method: req.method, url: req.url }));
  });
  const vsock = guest.serve(app, 80);
  await new Promise<void>((resolve) => vsock.once('listening', resolve));
  const host = await device.host.connect(80, { timeoutMs: 300_000 });
  const response = collect(host);
  host.write('GET /api/items?x=1 HTTP/1.1\r\nHost: guest\r\nConnection: close\r\n\r\n');
  const text = await response;
  t.regex(text, /^HTTP\/1\.1 200 OK\r\n/);
  t.regex(text, /content-type: application\/json/i);
  t.true(text.endsWith('{"method":"GET","url":"/api/items?x=1"}'), text);
  const closed = new Promise<void>((resolve) => vsock.once('close', resolve));
  app.close();
  await closed;
  t.false(vsock.listening);
});

test.serial('connect(port): reaches a host listener (CID 2 by default), net.Socket shape', async (t) => {
  const handle = device.host.listen(6100, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  try {
    const socket = guest.connect(6100);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const back = collect(socket);
    socket.end('round trip');
    t.is(await back, 'round trip');
    const refused = guest.connect({ port: 6101 });
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => refused.once('error', resolve));
    t.is(err.code, 'ECONNREFUSED');
  } finally {
    handle.close();
  }
});

test.serial('files: readFile, stat, readdir with fs/promises shapes; errors as Node reports them', async (t) => {
  t.is(guest.files.tag, 'site');
  t.is(await guest.files.readFile('/hello.txt', 'utf8'), 'hello from the share\n');
  t.is(await guest.files.readFile('hello.txt', { encoding: 'utf8' }), 'hello from the share\n');
  const data = await guest.files.readFile('sub/data.bin');
  t.true(Buffer.isBuffer(data));
  t.true(data.equals(Buffer.alloc(70_000, 7)));
  const st = await guest.files.stat('sub/data.bin');
  t.is(st.size, 70_000);
  t.true(st.isFile());
  t.true((await guest.files.stat('sub')).isDirectory());
  t.deepEqual((await guest.files.readdir('/')).sort(), ['hello.txt', 'sub']);
  const dirents = await guest.files.readdir('/', { withFileTypes: true });
  t.deepEqual(dirents.filter((d) => d.isDirectory()).map((d) => d.name), ['sub']);
  const h = await guest.files.open('hello.txt');
  const { bytesRead, buffer } = await h.read(Buffer.alloc(5), 0, 5, 0);
  t.is(buffer.subarray(0, bytesRead).toString(), 'hello');
  await h.close();
  const missing = await t.throwsAsync(guest.files.readFile('nope.txt'));
  t.is((missing as NodeJS.ErrnoException).code, 'ENOENT');
  t.is((missing as NodeJS.ErrnoException).path, 'nope.txt');
  const ro = await t.throwsAsync(guest.files.open('hello.txt', 'w'));
  t.is((ro as NodeJS.ErrnoException).code, 'EROFS');
});

test.serial('share(tag) finds a folder by tag; shares() lists them; an unknown tag names the ones there are', (t) => {
  t.deepEqual(guest.shares(), ['site']);
  t.is(guest.share('site').tag, 'site');
  const e = t.throws(() => guest.share('photos'));
  t.is((e as guest.GuestApiError).code, 'ERR_TSVIRTIO_NO_SHARE');
  t.regex(e!.message, /no shared folder with tag "photos" \(the shares: "site"\)/);
});

test.serial('allocBuffer: DMA memory that goes out by descriptor; freeBuffer gives it back', async (t) => {
  const server = guest.listen(7003, (socket) => {
    const buf = guest.allocBuffer(64 * 1024);
    buf.fill(0x5a);
    socket.end(buf, () => guest.freeBuffer(buf));
  });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  const host = await device.host.connect(7003, { timeoutMs: 300_000 });
  const got = await collectBytes(host);
  t.true(got.equals(Buffer.alloc(64 * 1024, 0x5a)));
  server.close();
});

test.serial('exit(status) hands the status to the runtime; a bad status or port is refused with ERR_TSVIRTIO_ARGUMENT', (t) => {
  t.throws(() => guest.exit(3), { instanceOf: ExitCalled });
  t.deepEqual(exits, [3]);
  for (const f of [() => guest.exit(256), () => guest.exit(-1), () => guest.exit(1.5), () => guest.listen(-1), () => guest.connect(0)]) {
    const e = t.throws(f);
    t.is((e as guest.GuestApiError).code, 'ERR_TSVIRTIO_ARGUMENT');
  }
  t.deepEqual(exits, [3]);
});

test.serial('without a runtime (on the host) every call says to start the program with tsvirtio run', async (t) => {
  const saved = (globalThis as Record<symbol, unknown>)[Symbol.for('tsvirtio.guest.runtime')];
  installRuntime(null);
  try {
    t.false(guest.inGuest());
    const e = t.throws(() => guest.listen(80));
    t.is((e as guest.GuestApiError).code, 'ERR_TSVIRTIO_NOT_IN_GUEST');
    t.regex(e!.message, /listen\(\): not running in a tsvirtio guest \(start the program with `npx tsvirtio run APP`\)/);
    const r = await t.throwsAsync(guest.files.readFile('x'));
    t.is((r as guest.GuestApiError).code, 'ERR_TSVIRTIO_NOT_IN_GUEST');
  } finally {
    (globalThis as Record<symbol, unknown>)[Symbol.for('tsvirtio.guest.runtime')] = saved;
  }
});

test.serial('files without a shared folder: ERR_TSVIRTIO_NO_SHARE saying to use --share', async (t) => {
  const saved = (globalThis as Record<symbol, unknown>)[Symbol.for('tsvirtio.guest.runtime')] as Parameters<typeof installRuntime>[0];
  installRuntime({ ...saved!, shares: [] });
  try {
    const e = await t.throwsAsync(guest.files.stat('/'));
    t.is((e as guest.GuestApiError).code, 'ERR_TSVIRTIO_NO_SHARE');
    t.regex(e!.message, /files\.stat\(\): no shared folder \(start the program with --share DIR\)/);
  } finally {
    installRuntime(saved);
  }
});
