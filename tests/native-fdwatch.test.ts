// The event-loop wrappers (EventFd, UnixFdSocket, UnixFdServer) and watcher lifetimes
// (process exit after stop/unref, exceptions in callbacks, worker teardown).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { ftruncateSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as n from '../kernel/native/index.js';
import { EventFd, FdSocketError, UnixFdServer, UnixFdSocket } from '../kernel/native/fd-watch.js';

const indexUrl = new URL('../kernel/native/index.js', import.meta.url).href;

function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-fdwatch-'));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

/** Runs a small ESM script in a child node; returns its exit status and output. */
function runChild(source: string, nodeArgs: string[] = []): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-child-'));
  try {
    const file = join(dir, 'child.mjs');
    writeFileSync(file, source);
    // The timeout only guards against a hang (a watcher keeping the child alive); it is
    // far above the ~100 ms these scripts take.
    const r = spawnSync(process.execPath, [...nodeArgs, file], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('EventFd: write, read, onReadable with the count, close', async (t) => {
  const e = new EventFd();
  try {
    t.is(e.read(), 0);
    e.write(2);
    e.write(3);
    t.is(e.read(), 5);
    const count = await new Promise<number>((resolve) => {
      e.onReadable(resolve);
      e.write(7);
    });
    t.is(count, 7);
  } finally {
    e.close();
  }
  t.true(e.closed);
  e.close(); // idempotent
  t.throws(() => e.write(), { instanceOf: FdSocketError });
});

test('UnixFdSocket reads exactly N bytes with the fds of their message', async (t) => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'vu.sock');
    const server = UnixFdServer.listen(path);
    const ram = n.memfdCreate('ram');
    ftruncateSync(ram, 4096);
    const kick = n.eventfd();
    const opened: number[] = [ram, kick];
    let client: UnixFdSocket | undefined;
    let peer: UnixFdSocket | undefined;
    try {
      const accepted = new Promise<UnixFdSocket>((resolve) => server.once('connection', resolve));
      client = UnixFdSocket.connect(path);
      peer = await accepted;

      const map = n.mmap(ram, 4096, 0);
      new Uint8Array(map)[100] = 0x5a;
      n.munmap(map);

      // Two messages, each "12-byte header + body", each with its own fd, sent back to back.
      const msg1 = Buffer.concat([Buffer.from('HEADER-one..'), Buffer.from('body-1')]);
      const msg2 = Buffer.concat([Buffer.from('HEADER-two..'), Buffer.from('body-two')]);
      t.true(client.send(msg1, [ram]));
      t.true(client.send(msg2, [kick]));
      t.true(client.send(Buffer.from('HEADER-none.')));

      const h1 = await peer.readExactly(12);
      t.is(h1!.data.toString(), 'HEADER-one..');
      t.is(h1!.fds.length, 1);
      opened.push(...h1!.fds);
      const b1 = await peer.readExactly(6);
      t.is(b1!.data.toString(), 'body-1');
      t.deepEqual(b1!.fds, []);
      const h2 = await peer.readExactly(12);
      t.is(h2!.data.toString(), 'HEADER-two..');
      t.is(h2!.fds.length, 1);
      opened.push(...h2!.fds);
      const b2 = await peer.readExactly(8);
      t.is(b2!.data.toString(), 'body-two');
      const hdr = new Uint8Array(16);
      const h3 = await peer.readInto(hdr.subarray(2, 14)); // a caller-owned buffer
      t.deepEqual(h3!.fds, []);
      t.is(Buffer.from(hdr.subarray(2, 14)).toString(), 'HEADER-none.');
      t.is(h3!.data.buffer, hdr.buffer);

      // The fds are the sender's objects: the memfd shows its byte, the eventfd counts.
      const m2 = n.mmap(h1!.fds[0]!, 4096, 0, false);
      t.is(new Uint8Array(m2)[100], 0x5a);
      n.munmap(m2);
      n.eventfdWrite(h2!.fds[0]!, 4);
      t.is(n.eventfdRead(kick), 4);

      // A read that has to wait for the bytes.
      const later = peer.readExactly(5);
      await expectRejects(t, peer.readExactly(1), 'ERR_READ_PENDING');
      client.send(Buffer.from('ab'));
      setImmediate(() => client!.send(Buffer.from('cde')));
      t.is((await later)!.data.toString(), 'abcde');

      // End of stream in the middle of a message, then at a boundary.
      const mid = peer.readExactly(10);
      client.send(Buffer.from('abc'));
      n.shutdown(client.fd, n.SHUT_WR);
      await expectRejects(t, mid, 'ERR_SOCKET_EOF');
      t.is(await peer.readExactly(4), null);
    } finally {
      client?.close();
      peer?.close();
      server.close();
      for (const fd of opened) n.close(fd);
    }
    t.false(existsSync(path)); // unlinked on close
  });
});

async function expectRejects(t: import('ava').ExecutionContext, p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
    t.fail(`expected a rejection with ${code}`);
  } catch (err) {
    t.is((err as { code?: string }).code, code);
  }
}

test('UnixFdSocket queues what the kernel does not take and drains', async (t) => {
  const [a, b] = n.unixSocketPair();
  const tx = new UnixFdSocket(a);
  const rx = new UnixFdSocket(b);
  try {
    const big = Buffer.alloc(4 << 20);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i >> 12) & 0xff;
    const drained = new Promise<void>((resolve) => tx.once('drain', resolve));
    t.false(tx.send(big)); // 4 MiB does not fit a Unix socket buffer
    t.true(tx.pendingSendBytes > 0);
    const expected = Buffer.from(big);
    big.fill(0xee); // the queued part was copied: reusing the buffer changes nothing
    const got = await rx.readExactly(big.length);
    await drained;
    t.is(tx.pendingSendBytes, 0);
    t.true(got!.data.equals(expected));
  } finally {
    tx.close();
    rx.close();
  }
});

test('closing a UnixFdSocket resolves its pending read with null and emits close', async (t) => {
  const [a, b] = n.unixSocketPair();
  const s = new UnixFdSocket(a);
  let closed = 0;
  s.on('close', () => closed++);
  const pending = s.readExactly(12);
  s.close();
  s.close();
  t.is(await pending, null);
  t.is(closed, 1);
  await expectRejects(t, s.readExactly(1), 'ERR_SOCKET_CLOSED');
  n.close(b);
});

test('a stopped watcher does not keep the process alive; neither does an unref()ed one', (t) => {
  const r = runChild(`
    import * as n from ${JSON.stringify(indexUrl)};
    const fd = n.eventfd();
    const w = n.watchFd(fd, () => {});
    w.stop();
    const fd2 = n.eventfd();
    n.watchFd(fd2, () => {}).unref();
    console.log('done');
  `);
  t.is(r.signal, null, r.stderr);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), 'done');
});

test('an exception in a watcher callback is an uncaught exception; microtasks run after callbacks', (t) => {
  const r = runChild(`
    import * as n from ${JSON.stringify(indexUrl)};
    const fd = n.eventfd();
    const w = n.watchFd(fd, () => {
      n.eventfdRead(fd);
      Promise.resolve().then(() => console.log('microtask'));
      throw new Error('boom');
    });
    process.on('uncaughtException', (e) => { console.log('caught ' + e.message); w.stop(); n.close(fd); });
    n.eventfdWrite(fd, 1);
  `);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n').sort(), ['caught boom', 'microtask']);
});

test('a worker thread may exit with a watcher still running', (t) => {
  const r = runChild(`
    import { Worker } from 'node:worker_threads';
    const src = \`(async () => {
      const n = await import(${JSON.stringify(indexUrl)});
      const { parentPort } = await import('node:worker_threads');
      const fd = n.eventfd();
      n.watchFd(fd, () => {});           // never stopped: the worker's teardown closes it
      const m = n.mmapAnonymous(65536);  // never unmapped: the GC/teardown does it
      new Uint8Array(m)[0] = 1;
      parentPort.postMessage('ready');
    })();\`;
    const w = new Worker(src, { eval: true });
    w.on('message', () => w.terminate());
    w.on('error', (e) => { console.log('error ' + e.message); process.exitCode = 2; });
    w.on('exit', () => console.log('worker gone'));
  `);
  t.is(r.signal, null, r.stderr);
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), 'worker gone');
});

test('mappings dropped without munmap are unmapped by the garbage collector', (t) => {
  const r = runChild(`
    import * as n from ${JSON.stringify(indexUrl)};
    import { ftruncateSync, readFileSync } from 'node:fs';
    const count = () => readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('memfd:gc-probe')).length;
    const fd = n.memfdCreate('gc-probe');
    ftruncateSync(fd, 1 << 16);
    let keep = [];
    for (let i = 0; i < 100; i++) keep.push(n.mmap(fd, 1 << 16, 0));
    const kept = n.mmap(fd, 1 << 16, 0); // stays reachable: must stay mapped
    console.log(count());
    keep = null;
    for (let i = 0; i < 100 && count() > 1; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
    console.log(count());
    new Uint8Array(kept)[0] = 1;
    n.munmap(kept);
    console.log(count());
    n.close(fd);
  `, ['--expose-gc']);
  t.is(r.status, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['101', '1', '0']);
});
