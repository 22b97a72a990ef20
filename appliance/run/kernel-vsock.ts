// The Linux kernel's own AF_VSOCK sockets as Node Duplex streams, through the native
// addon (vsockSocket/vsockBind/vsockListen/vsockAccept + watchFd): the "stock drivers"
// side of the appliance benchmark. node:net cannot adopt an AF_VSOCK fd (libuv guesses
// its handle type as unknown), hence this small adapter.
import { Duplex } from 'node:stream';
import {
  type FdWatcher,
  READABLE,
  WRITABLE,
  close as closeFd,
  read as readFd,
  shutdown,
  SHUT_WR,
  vsockAccept,
  vsockBind,
  vsockListen as nativeListen,
  vsockSocket,
  watchFd,
  write as writeFd,
} from '../../kernel/native/index.js';

const VMADDR_CID_ANY = 0xffffffff;
const READ_CHUNK_BYTES = 64 * 1024;

/** One accepted AF_VSOCK connection (nonblocking fd) as a half-open capable Duplex. */
export class KernelVsockSocket extends Duplex {
  #fd: number;
  #watcher: FdWatcher | null;
  #events = 0;
  #reading = false;
  #pendingWrite: { buf: Buffer; cb: (err?: Error | null) => void } | null = null;
  #pendingFinal: ((err?: Error | null) => void) | null = null;

  constructor(fd: number) {
    super({ allowHalfOpen: true });
    this.#fd = fd;
    this.#watcher = watchFd(fd, (err, events) => this.#onPoll(err, events), READABLE);
    this.#watcher.pause();
  }

  #want(events: number): void {
    if (this.#watcher === null) return;
    if (events === this.#events) return;
    this.#events = events;
    if (events === 0) this.#watcher.pause();
    else this.#watcher.resume(events);
  }

  #updateInterest(): void {
    let ev = 0;
    if (this.#reading) ev |= READABLE;
    if (this.#pendingWrite !== null) ev |= WRITABLE;
    this.#want(ev);
  }

  #onPoll(err: Error | null, events: number): void {
    if (err) {
      this.destroy(err);
      return;
    }
    if (events & WRITABLE && this.#pendingWrite) this.#flushWrite();
    if (events & READABLE && this.#reading) this.#readSome();
    this.#updateInterest();
  }

  #readSome(): void {
    while (this.#reading && this.#fd >= 0) {
      const buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
      let n: number;
      try {
        n = readFd(this.#fd, buf);
      } catch (e) {
        this.destroy(e as Error);
        return;
      }
      if (n < 0) return; // would block: wait for the watcher
      if (n === 0) {
        this.#reading = false;
        this.push(null);
        return;
      }
      if (!this.push(buf.subarray(0, n))) this.#reading = false;
    }
  }

  override _read(): void {
    this.#reading = true;
    this.#readSome();
    this.#updateInterest();
  }

  #flushWrite(): void {
    const p = this.#pendingWrite;
    if (p === null) return;
    while (p.buf.length > 0) {
      let n: number;
      try {
        n = writeFd(this.#fd, p.buf);
      } catch (e) {
        this.#pendingWrite = null;
        p.cb(e as Error);
        return;
      }
      if (n < 0) return; // would block
      p.buf = p.buf.subarray(n);
    }
    this.#pendingWrite = null;
    p.cb();
    if (this.#pendingFinal) {
      const f = this.#pendingFinal;
      this.#pendingFinal = null;
      this._final(f);
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#pendingWrite = { buf: chunk, cb };
    this.#flushWrite();
    this.#updateInterest();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.#pendingWrite) {
      this.#pendingFinal = cb;
      return;
    }
    try {
      shutdown(this.#fd, SHUT_WR);
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.#watcher?.stop();
    this.#watcher = null;
    if (this.#fd >= 0) {
      try {
        closeFd(this.#fd);
      } catch {
        // already closed
      }
      this.#fd = -1;
    }
    const p = this.#pendingWrite;
    this.#pendingWrite = null;
    p?.cb(err ?? new Error('socket destroyed'));
    cb(err);
  }
}

/** Listens on an AF_VSOCK port (any CID) and hands each connection to onSocket. */
export function kernelVsockListen(port: number, onSocket: (socket: Duplex) => void): { close(): void; port: number } {
  const fd = vsockSocket();
  vsockBind(fd, VMADDR_CID_ANY, port);
  nativeListen(fd, 128);
  const watcher = watchFd(fd, (err) => {
    if (err) return;
    for (;;) {
      let peer;
      try {
        peer = vsockAccept(fd);
      } catch {
        return;
      }
      if (peer === -1) return;
      onSocket(new KernelVsockSocket(peer.fd));
    }
  }, READABLE);
  return {
    port,
    close() {
      watcher.stop();
      closeFd(fd);
    },
  };
}
