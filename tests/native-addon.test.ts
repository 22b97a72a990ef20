// The native addon, call by call: mmap/munmap over memfds, eventfd, fd watchers, Unix
// sockets passing fds, error codes. Every fd and watcher opened here is closed/stopped.
import test from 'ava';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as n from '../kernel/native/index.js';

function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'tsvirtio-native-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function memfd(size: number): number {
  const fd = n.memfdCreate('test-ram');
  ftruncateSync(fd, size);
  return fd;
}

test('two mappings of one memfd (at an offset) see the same bytes', (t) => {
  const fd = memfd(0x200000);
  try {
    const whole = n.mmap(fd, 0x200000, 0, true, true);
    const part = n.mmap(fd, 0x10000, 0xc0000, true, true); // offset as QEMU passes them
    const partBig = n.mmap(fd, 0x1000, 0xc1000n, false, true); // bigint offset, read-only
    const w = new Uint8Array(whole);
    const p = new Uint8Array(part);
    w[0xc0000] = 0xab;
    w[0xc1234] = 0xcd;
    t.is(p[0], 0xab);
    t.is(p[0x1234], 0xcd);
    t.is(new Uint8Array(partBig)[0x234], 0xcd);
    p[0xffff] = 0x77;
    t.is(w[0xcffff], 0x77);
    t.is(part.byteLength, 0x10000);
    t.true(n.munmap(whole));
    t.true(n.munmap(part));
    t.true(n.munmap(partBig));
  } finally {
    n.close(fd);
  }
});

test('munmap detaches the buffer and is idempotent; only our mappings are accepted', (t) => {
  const fd = memfd(4096);
  try {
    const m = n.mmap(fd, 4096, 0);
    const view = new Uint8Array(m);
    const dv = new DataView(m);
    view[1] = 9;
    t.is(dv.getUint8(1), 9);
    t.true(n.munmap(m));
    t.is(m.byteLength, 0);
    t.is(view.length, 0);
    t.is(view[1] as number | undefined, undefined);
    t.throws(() => dv.getUint8(1), { instanceOf: TypeError });
    t.false(n.munmap(m));
    t.throws(() => n.munmap(new ArrayBuffer(16)), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' } as never);
  } finally {
    n.close(fd);
  }
});

test('a mapping outlives the fd it was made from', (t) => {
  const fd = memfd(8192);
  const m = n.mmap(fd, 8192, 0);
  n.close(fd);
  new Uint8Array(m).fill(5);
  t.is(new Uint8Array(m)[8191], 5);
  n.munmap(m);
});

test('anonymous mappings, mlock and addressOf', (t) => {
  const ps = n.pageSize();
  t.true(ps >= 4096);
  const m = n.mmapAnonymous(4 * ps);
  try {
    const base = n.addressOf(m);
    t.is(base % BigInt(ps), 0n);
    t.is(n.addressOf(new Uint8Array(m, 100, 8)), base + 100n);
    t.is(n.addressOf(new DataView(m, 8)), base + 8n);
    try {
      n.mlock(m);
      n.munlock(m);
    } catch (err) {
      // mlock may be refused by RLIMIT_MEMLOCK outside root; that is still a coded error
      t.is((err as n.NativeError).syscall, 'mlock');
    }
    new Uint8Array(m)[4 * ps - 1] = 1;
    t.is(new Uint8Array(m)[4 * ps - 1], 1);
  } finally {
    n.munmap(m);
  }
  t.throws(() => n.addressOf(m), { instanceOf: TypeError }); // detached now
});

test('errors carry errno codes and syscall names', (t) => {
  const fd = memfd(4096);
  n.close(fd); // fd is now a closed (bad) descriptor number
  const e1 = t.throws(() => n.mmap(fd, 4096, 0)) as n.NativeError;
  t.is(e1.code, 'EBADF');
  t.is(e1.syscall, 'mmap');
  t.is(e1.errno, -9);
  t.regex(e1.message, /^EBADF: .*, mmap$/);
  const e2 = t.throws(() => n.close(fd)) as n.NativeError;
  t.is(e2.code, 'EBADF');
  t.is(e2.syscall, 'close');
  const fd2 = memfd(4096);
  try {
    t.is((t.throws(() => n.mmap(fd2, 4096, 123)) as n.NativeError).code, 'EINVAL'); // unaligned offset
  } finally {
    n.close(fd2);
  }
  const e3 = t.throws(() => n.unixConnect('/nonexistent-dir-tsvirtio/sock')) as n.NativeError;
  t.is(e3.code, 'ENOENT');
  t.is(e3.syscall, 'connect');
  t.is((t.throws(() => n.read(fd, new Uint8Array(4))) as n.NativeError).code, 'EBADF');
  t.throws(() => n.mmap(-1 as number, 0, 0), { instanceOf: RangeError });
  t.throws(() => n.mmap('3' as unknown as number, 4096, 0), { instanceOf: TypeError });
});

test('eventfd: write adds, read resets, empty read is -1', (t) => {
  const fd = n.eventfd(0, true);
  try {
    t.is(n.eventfdRead(fd), -1);
    t.true(n.eventfdWrite(fd, 3));
    t.true(n.eventfdWrite(fd));
    t.is(n.eventfdRead(fd), 4);
    t.is(n.eventfdRead(fd), -1);
    t.true(n.eventfdWrite(fd, 0xfffffffffffffffen - 1n));
    t.false(n.eventfdWrite(fd, 5)); // would overflow: EAGAIN -> false
  } finally {
    n.close(fd);
  }
  const e = n.eventfd(7, true);
  t.is(n.eventfdRead(e), 7);
  n.close(e);
});

test('watchFd fires for an eventfd on the main thread and stops', async (t) => {
  const fd = n.eventfd(0, true);
  let calls = 0;
  let w: n.FdWatcher | undefined;
  const got = await new Promise<number>((resolve) => {
    w = n.watchFd(fd, (err, events) => {
      calls++;
      t.is(err, null);
      t.truthy(events & n.READABLE);
      resolve(n.eventfdRead(fd));
      w!.stop();
    });
    t.true(w.active);
    n.eventfdWrite(fd, 42);
  });
  t.is(got, 42);
  t.false(w!.active);
  w!.stop(); // idempotent
  n.eventfdWrite(fd, 1); // no watcher now: nothing fires
  await new Promise((r) => setImmediate(r));
  t.is(calls, 1);
  t.is(n.eventfdRead(fd), 1);
  n.close(fd);
});

test('watchFd: pause/resume; a second watcher on one fd is refused', async (t) => {
  const fd = n.eventfd(0, true);
  let calls = 0;
  const w = n.watchFd(fd, () => {
    calls++;
    n.eventfdRead(fd);
  });
  try {
    t.is((t.throws(() => n.watchFd(fd, () => {})) as n.NativeError).code, 'EEXIST');
    w.pause();
    t.false(w.active);
    n.eventfdWrite(fd, 1);
    await new Promise((r) => setImmediate(r));
    t.is(calls, 0);
    await new Promise<void>((resolve) => {
      const fd2 = n.eventfd(0, true);
      const w2 = n.watchFd(fd2, () => {}); // a different fd: fine
      w2.stop();
      n.close(fd2);
      w.resume();
      const check = (): void => {
        if (calls > 0) resolve();
        else setImmediate(check);
      };
      check();
    });
    t.is(calls, 1);
  } finally {
    w.stop();
    n.close(fd);
  }
});

test('unixListen/unixConnect pass a memfd; the receiver maps it and sees the bytes', async (t) => {
  const tmp = tempDir();
  const path = join(tmp.dir, 'vhost.sock');
  const lfd = n.unixListen(path, 4);
  const fds: number[] = [lfd];
  try {
    t.is(n.unixAccept(lfd), -1); // nobody yet: EAGAIN -> -1
    const cfd = n.unixConnect(path);
    fds.push(cfd);
    // Wait for the listener to become readable, then accept.
    const sfd = await new Promise<number>((resolve) => {
      const w = n.watchFd(lfd, () => {
        const fd = n.unixAccept(lfd);
        if (fd >= 0) {
          w.stop();
          resolve(fd);
        }
      });
    });
    fds.push(sfd);

    // The sender's "guest RAM".
    const ram = memfd(0x10000);
    fds.push(ram);
    const senderMap = n.mmap(ram, 0x10000, 0);
    new Uint8Array(senderMap).set([1, 2, 3, 4], 0x8000);

    const msg = Buffer.from('MEMTABLE....');
    t.is(n.sendMsg(cfd, msg, [ram]), msg.length);
    t.is(n.sendMsg(cfd, Buffer.from('tail')), 4);

    const buf = new Uint8Array(12);
    const r = n.recvMsg(sfd, buf, 8);
    t.is(r.bytes, 12);
    t.is(Buffer.from(buf).toString(), 'MEMTABLE....');
    t.is(r.fds.length, 1);
    t.false(r.fdsTruncated);
    const received = r.fds[0]!;
    fds.push(received);
    t.not(received, ram);
    const recvMap = n.mmap(received, 0x8000, 0x8000);
    t.deepEqual([...new Uint8Array(recvMap, 0, 4)], [1, 2, 3, 4]);
    new Uint8Array(recvMap)[4] = 99; // and back the other way
    t.is(new Uint8Array(senderMap)[0x8004], 99);
    n.munmap(recvMap);
    n.munmap(senderMap);

    const tail = new Uint8Array(16);
    const r2 = n.recvMsg(sfd, tail, 8);
    t.is(r2.bytes, 4);
    t.deepEqual(r2.fds, []);
    t.is(n.recvMsg(sfd, tail, 8).bytes, -1); // EAGAIN
    t.is(n.read(sfd, tail), -1);

    n.shutdown(cfd, n.SHUT_WR);
    t.is(n.recvMsg(sfd, tail, 8).bytes, 0); // EOF
    t.is(n.read(sfd, tail), 0);
  } finally {
    for (const fd of fds) n.close(fd);
    tmp.cleanup();
  }
});

test('more fds than maxFds: the extra are dropped and reported', (t) => {
  const [a, b] = n.unixSocketPair();
  const e1 = n.eventfd();
  const e2 = n.eventfd();
  try {
    t.is(n.sendMsg(a, Buffer.from('x'), [e1, e2]), 1);
    const r = n.recvMsg(b, new Uint8Array(1), 1);
    t.is(r.bytes, 1);
    t.true(r.fdsTruncated);
    t.is(r.fds.length, 1);
    for (const fd of r.fds) n.close(fd);
    t.is(n.sendMsg(a, Buffer.from('y'), [e1]), 1);
    const r0 = n.recvMsg(b, new Uint8Array(1)); // maxFds 0: fds discarded
    t.true(r0.fdsTruncated);
    t.deepEqual(r0.fds, []);
  } finally {
    for (const fd of [a, b, e1, e2]) n.close(fd);
  }
});

test('write/read on a socket pair until EAGAIN; EPIPE after the peer closes', (t) => {
  const [a, b] = n.unixSocketPair();
  try {
    const chunk = new Uint8Array(65536);
    let total = 0;
    for (;;) {
      const w = n.write(a, chunk);
      if (w < 0) break;
      total += w;
    }
    t.true(total > 0);
    t.is(n.sendMsg(a, chunk), -1);
    let drained = 0;
    for (;;) {
      const r = n.read(b, chunk);
      if (r < 0) break;
      drained += r;
    }
    t.is(drained, total);
  } finally {
    n.close(b);
  }
  try {
    const e = t.throws(() => n.sendMsg(a, Buffer.from('z'))) as n.NativeError;
    t.is(e.code, 'EPIPE');
    t.is(e.syscall, 'sendmsg');
  } finally {
    n.close(a);
  }
});

test('setNonblocking toggles O_NONBLOCK', (t) => {
  const fd = n.eventfd(0, false);
  try {
    n.setNonblocking(fd, true);
    t.is(n.eventfdRead(fd), -1); // would block forever if the flag did not take
    n.setNonblocking(fd, false);
    n.eventfdWrite(fd, 2);
    t.is(n.eventfdRead(fd), 2);
  } finally {
    n.close(fd);
  }
});

test('vsock calls exist and fail with coded errors', (t) => {
  // Whether this host has AF_VSOCK or not, no call may crash. Real vsock traffic is not
  // tested here (this host's vsock, if any, belongs to its hypervisor): only sockets that
  // are created and closed, and calls on a non-socket fd.
  try {
    n.close(n.vsockSocket());
  } catch (err) {
    t.regex((err as n.NativeError).code, /^E[A-Z]+$/);
    t.is((err as n.NativeError).syscall, 'socket');
  }
  const notSocket = n.eventfd();
  try {
    t.is((t.throws(() => n.vsockBind(notSocket, n.VMADDR_CID_ANY, 1234)) as n.NativeError).code, 'ENOTSOCK');
    t.is((t.throws(() => n.vsockListen(notSocket)) as n.NativeError).code, 'ENOTSOCK');
    t.is((t.throws(() => n.vsockAccept(notSocket)) as n.NativeError).code, 'ENOTSOCK');
    t.is((t.throws(() => n.vsockConnect(notSocket, n.VMADDR_CID_HOST, 1234)) as n.NativeError).syscall, 'connect');
    t.throws(() => n.vsockBind(notSocket, 2 ** 32, 1), { instanceOf: RangeError });
  } finally {
    n.close(notSocket);
  }
  try {
    t.true(n.getLocalCid() > 0);
  } catch (err) {
    t.regex((err as n.NativeError).code, /^E[A-Z]+$/); // ENOENT without /dev/vsock
  }
});

test('the loader finds the addon and knows where it looked', (t) => {
  t.true(n.addonAvailable());
  const c = n.addonCandidates();
  t.true(c.some((p) => p.endsWith(join('build', 'Release', 'tsvirtio.node')) && existsSync(p)));
  t.is(n.ADDON_NOT_BUILT_MESSAGE, 'native addon not built: run `npm ci` (or `node build.mjs`)');
});

test('watchFd on a bad fd throws EBADF; callback must be a function', (t) => {
  const fd = n.eventfd();
  n.close(fd);
  t.is((t.throws(() => n.watchFd(fd, () => {})) as n.NativeError).code, 'EBADF');
  const fd2 = n.eventfd();
  try {
    t.throws(() => n.watchFd(fd2, 'nope' as unknown as n.WatchCallback), { instanceOf: TypeError });
    t.throws(() => n.watchFd(fd2, () => {}, 0), { instanceOf: RangeError });
  } finally {
    n.close(fd2);
  }
});

test('addressOf works on views of a SharedArrayBuffer', (t) => {
  const sab = new SharedArrayBuffer(64);
  const a0 = n.addressOf(new Uint8Array(sab));
  t.is(n.addressOf(new Uint8Array(sab, 8)), a0 + 8n);
});

test('addressOf + /proc/self/pagemap give a physical frame for locked memory (root only)', (t) => {
  const ps = n.pageSize();
  const m = n.mmapAnonymous(ps, { populate: true });
  let pagemap: number | undefined;
  try {
    n.mlock(m);
    const addr = n.addressOf(m);
    pagemap = openSync('/proc/self/pagemap', 'r');
    const entry = Buffer.alloc(8);
    t.is(readSync(pagemap, entry, 0, 8, Number(addr / BigInt(ps)) * 8), 8);
    const v = entry.readBigUInt64LE(0);
    t.is(v >> 63n, 1n, 'page present');
    const pfn = v & ((1n << 55n) - 1n);
    if (process.getuid?.() === 0) t.not(pfn, 0n);
    else t.pass('not root: the kernel hides PFNs');
  } finally {
    if (pagemap !== undefined) closeSync(pagemap);
    n.munmap(m);
  }
});

test('hugetlb anonymous mapping (skipped when the host has no huge pages reserved)', (t) => {
  let m: ArrayBuffer;
  try {
    m = n.mmapAnonymous(2 << 20, { hugetlb: true, shared: true, populate: true });
  } catch (err) {
    t.true(['ENOMEM', 'EINVAL'].includes((err as n.NativeError).code), String(err));
    return;
  }
  try {
    t.is(n.addressOf(m) % BigInt(2 << 20), 0n);
  } finally {
    n.munmap(m);
  }
});

test('reseedRandom: the bytes go to the kernel pool (RNDADDENTROPY, RNDRESEEDCRNG) and node\'s OpenSSL; bad sizes refused (root only)', (t) => {
  const tooFew = t.throws(() => n.reseedRandom(Buffer.alloc(8)), { instanceOf: RangeError });
  t.regex(tooFew!.message, /16 to 512 bytes/);
  t.throws(() => n.reseedRandom(Buffer.alloc(513)), { instanceOf: RangeError });
  if (process.getuid?.() !== 0) {
    // Without CAP_SYS_ADMIN the kernel refuses: an errno error naming the ioctl.
    const e = t.throws(() => n.reseedRandom(Buffer.alloc(32, 1))) as n.NativeError;
    t.is(e.code, 'EPERM');
    t.regex(e.syscall, /RNDADDENTROPY/);
    return;
  }
  // Mixing known bytes into the host's pool adds to it; it never replaces what is there.
  t.deepEqual(n.reseedRandom(Buffer.alloc(32, 0x5a)), { kernel: true, openssl: true });
});

test('setRealtimeClock: times outside 1970-9999 and non-numbers are refused before any system call', (t) => {
  // (Setting the clock itself is left to the guest: this host's clock is not ours to move.)
  t.throws(() => n.setRealtimeClock(-1), { instanceOf: RangeError });
  t.throws(() => n.setRealtimeClock(Number.NaN), { instanceOf: RangeError });
  t.throws(() => n.setRealtimeClock(253402300800000), { instanceOf: RangeError });
  t.throws(() => (n.setRealtimeClock as (x: unknown) => void)('now'), { instanceOf: TypeError });
});
