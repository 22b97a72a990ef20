// What happens when files misbehave or clients leave mid-response: a file shorter than
// its stat, a read error before and after the head went out, a client gone while reads
// are in flight. The server answers 500 when nothing was sent yet, closes the
// connection otherwise, keeps serving others, and gets every body buffer back.
import test from 'ava';
import { type Socket, createConnection } from 'node:net';
import { startHostWebServer } from './support/host-webserver.js';
import { HttpResponseReader } from '../appliance/webserver/client/http-response-reader.js';
import type { SiteFileHandle, SiteFileStat, SiteFiles } from '../appliance/webserver/files/site-files.js';

/** In-memory files; `failAt` makes reads at or past that offset reject; `delay` holds every read until released. */
class FakeFiles implements SiteFiles {
  files = new Map<string, { data: Buffer; statSize?: number; failAt?: number }>();
  held: Array<() => void> = [];
  hold = false;
  reads = 0;
  async stat(path: string): Promise<SiteFileStat | null> {
    if (path === '/') return { kind: 'directory', size: 0, mtimeMs: 0 };
    const f = this.files.get(path);
    return f ? { kind: 'file', size: f.statSize ?? f.data.length, mtimeMs: 1 } : null;
  }
  async open(path: string): Promise<SiteFileHandle> {
    const f = this.files.get(path)!;
    return {
      read: async (into, offset, length, position) => {
        this.reads++;
        if (this.hold) await new Promise<void>((r) => this.held.push(r));
        if (f.failAt !== undefined && position + length > f.failAt) throw new Error('EIO: simulated read error');
        const n = Math.max(0, Math.min(length, f.data.length - position));
        f.data.copy(into, offset, position, position + n);
        return n;
      },
      close: async () => {},
    };
  }
  releaseAll(): void {
    for (const r of this.held.splice(0)) r();
  }
}

async function connect(port: number): Promise<{ socket: Socket; reader: HttpResponseReader }> {
  const socket = createConnection({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return { socket, reader: new HttpResponseReader(socket) };
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
const big = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => i & 0xff));

test('a file shorter than its stat: 500 when nothing went out, the connection goes on', async (t) => {
  const files = new FakeFiles();
  files.files.set('/short.bin', { data: big(1000), statSize: 5000 });
  files.files.set('/ok.bin', { data: big(300_000) });
  const srv = await startHostWebServer('/nonexistent', { files, cache: false });
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  socket.write(get('/short.bin') + get('/ok.bin'));
  const r = await reader.next();
  t.is(r.status, 500);
  const ok = await reader.next();
  t.true(ok.body.equals(big(300_000)));
  await until(() => srv.server.buffersIdle === srv.server.buffersAllocated);
  t.is(srv.server.stats.aborted, 1);
});

test('a read error after the head went out closes the connection; other clients are served', async (t) => {
  const files = new FakeFiles();
  files.files.set('/bad.bin', { data: big(500_000), failAt: 300_000 });
  files.files.set('/ok.bin', { data: big(200_000) });
  const srv = await startHostWebServer('/nonexistent', { files, cache: false });
  t.teardown(() => srv.close());
  const a = await connect(srv.port);
  t.teardown(() => a.socket.destroy());
  const got: Buffer[] = [];
  a.socket.on('data', (d: Buffer) => got.push(d));
  a.socket.write(get('/bad.bin'));
  await a.reader.closed();
  const all = Buffer.concat(got);
  t.regex(all.toString('latin1', 0, 20), /^HTTP\/1\.1 200 OK/);
  t.true(all.length < 500_000, 'the body was cut short: the client sees a truncated response');
  const b = await connect(srv.port);
  t.teardown(() => b.socket.destroy());
  b.socket.write(get('/ok.bin'));
  t.true((await b.reader.next()).body.equals(big(200_000)));
  await until(() => srv.server.buffersIdle === srv.server.buffersAllocated);
  t.pass();
});

test('a client that leaves while reads are in flight: the reads finish, every buffer comes back', async (t) => {
  const files = new FakeFiles();
  files.files.set('/slow.bin', { data: big(1_000_000) });
  const srv = await startHostWebServer('/nonexistent', { files, cache: false, maxChunksInFlight: 4 });
  t.teardown(() => srv.close());
  files.hold = true;
  const { socket } = await connect(srv.port);
  socket.write(get('/slow.bin'));
  await until(() => files.held.length === 4); // four chunks read ahead at once
  t.is(srv.server.buffersAllocated, 4);
  socket.destroy();
  await until(() => srv.server.connectionCount === 0);
  t.is(srv.server.buffersIdle, 0, 'buffers under a running read are not given back yet');
  files.hold = false;
  files.releaseAll();
  await until(() => srv.server.buffersIdle === 4);
  t.is(files.reads, 4, 'no read started after the client left');
});

test('when the buffer allocator runs out (DMA memory exhausted), heap buffers stand in and responses stay correct', async (t) => {
  const files = new FakeFiles();
  files.files.set('/a.bin', { data: big(400_000) });
  let allowed = 2;
  const freed: Uint8Array[] = [];
  const bufferAllocator = {
    alloc: (n: number) => {
      if (allowed-- <= 0) throw new Error('ERR_DMA_EXHAUSTED');
      return new Uint8Array(n);
    },
    free: (b: Uint8Array) => void freed.push(b),
  };
  const srv = await startHostWebServer('/nonexistent', { files, cache: false, bufferAllocator, maxIdleBuffers: 2 });
  t.teardown(() => srv.close());
  const { socket, reader } = await connect(srv.port);
  t.teardown(() => socket.destroy());
  for (let i = 0; i < 3; i++) {
    socket.write(get('/a.bin'));
    t.true((await reader.next()).body.equals(big(400_000)));
  }
  t.true(srv.server.bufferFallbacks > 0);
  await until(() => srv.server.buffersIdle === srv.server.buffersAllocated);
  t.is(srv.server.buffersAllocated, 2, 'the stand-ins were dropped, the two allocator buffers kept');
  t.is(freed.length, 0, 'a heap stand-in is never handed to the allocator');
});
