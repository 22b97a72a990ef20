// Small event-loop wrappers over the addon's fds, for callers that would otherwise
// juggle fds, watchers and EAGAIN themselves:
//   - EventFd: an eventfd with read()/write()/onReadable()/close() (kicks and calls);
//   - UnixFdSocket: a Unix stream socket that reads exactly N bytes together with the
//     fds that came with them (what a vhost-user framing layer needs) and sends bytes
//     with fds, queueing what the kernel does not take at once;
//   - UnixFdServer: a listening Unix socket emitting 'connection' with UnixFdSockets.
//
// Ownership: each object owns its fd and closes it in close(). Fds *received* belong to
// whoever receives them (the resolved message), except on errors, where they are closed.

import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';

import {
  type FdWatcher,
  type NativeError,
  READABLE,
  WRITABLE,
  close as closeFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  recvMsg,
  sendMsg,
  unixAccept,
  unixConnect,
  unixListen,
  watchFd,
} from './index.js';

/** Errors raised by these wrappers (not system call failures: those are NativeErrors). */
export class FdSocketError extends Error {
  constructor(
    message: string,
    readonly code: 'ERR_SOCKET_CLOSED' | 'ERR_SOCKET_EOF' | 'ERR_FDS_TRUNCATED' | 'ERR_READ_PENDING',
  ) {
    super(message);
    this.name = 'FdSocketError';
  }
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already gone: nothing else to do
    }
  }
}

// ---- EventFd ----------------------------------------------------------------------------

/** An eventfd (nonblocking). */
export class EventFd {
  #fd: number;
  #watcher: FdWatcher | null = null;

  /** Creates a new eventfd, or adopts `fd` (e.g. a kick fd received over vhost-user). */
  constructor(fd?: number) {
    this.#fd = fd ?? eventfd(0, true);
  }

  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Reads and resets the counter: the sum of the writes since the last read, or 0 if none. */
  read(): number {
    const v = eventfdRead(this.#checkOpen());
    return v < 0 ? 0 : v;
  }

  /** Adds `value` (default 1). False if the counter would overflow. */
  write(value: number | bigint = 1): boolean {
    return eventfdWrite(this.#checkOpen(), value);
  }

  /**
   * Calls `cb(count)` on this thread whenever the counter becomes non-zero, after reading
   * (and so resetting) it. One callback at a time: a new one replaces the old. Errors
   * from the watcher go to `onError` (default: thrown, i.e. an uncaught exception).
   */
  onReadable(cb: (count: number) => void, onError?: (err: NativeError) => void): this {
    this.#watcher?.stop();
    this.#watcher = watchFd(this.#checkOpen(), (err) => {
      if (err) {
        if (onError) onError(err);
        else throw err;
        return;
      }
      const count = this.#fd < 0 ? -1 : eventfdRead(this.#fd);
      if (count > 0) cb(count);
    });
    return this;
  }

  /** Stops the onReadable callback (keeps the fd open). */
  stopWatching(): void {
    this.#watcher?.stop();
    this.#watcher = null;
  }

  /** Lets a running onReadable watcher not keep the process alive. */
  unref(): this {
    this.#watcher?.unref();
    return this;
  }

  ref(): this {
    this.#watcher?.ref();
    return this;
  }

  /** Stops watching and closes the fd. Idempotent. */
  close(): void {
    this.stopWatching();
    if (this.#fd >= 0) {
      const fd = this.#fd;
      this.#fd = -1;
      closeFd(fd);
    }
  }

  #checkOpen(): number {
    if (this.#fd < 0) throw new FdSocketError('eventfd is closed', 'ERR_SOCKET_CLOSED');
    return this.#fd;
  }
}

// ---- UnixFdSocket ------------------------------------------------------------------------

/** Bytes read from a socket and the fds that arrived with them. */
export interface FdMessage {
  data: Buffer;
  /** Received fds (close-on-exec), owned by the receiver from now on. */
  fds: number[];
}

interface PendingRead {
  buf: Buffer;
  got: number;
  fds: number[];
  maxFds: number;
  resolve: (m: FdMessage | null) => void;
  reject: (e: Error) => void;
}

interface PendingWrite {
  data: Buffer;
  fds: readonly number[];
}

/**
 * A connected nonblocking Unix stream socket with fd passing.
 *
 * Reading is pull-based: `readExactly(n)` resolves with exactly n bytes and every fd
 * received while reading them, so a framing layer reads a header, then the body.
 * Nothing is read from the kernel unless a read is pending, so fds can never be
 * attached to the wrong message by this layer. On a stream socket Linux delivers a
 * message's fds with its first byte: read each message's header on its own.
 *
 * Events: 'drain' (the send queue emptied), 'error' (a queued send failed), 'close'.
 */
export class UnixFdSocket extends EventEmitter {
  #fd: number;
  #watcher: FdWatcher;
  #read: PendingRead | null = null;
  #writes: PendingWrite[] = [];
  #interest = 0;

  /** Adopts a connected stream socket fd (it is made nonblocking). */
  constructor(fd: number) {
    super();
    this.#fd = fd;
    this.#watcher = watchFd(fd, (err, events) => this.#onPoll(err, events), READABLE);
    this.#watcher.pause();
  }

  /** Connects to a listening Unix socket. */
  static connect(path: string): UnixFdSocket {
    const fd = unixConnect(path);
    try {
      return new UnixFdSocket(fd);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Bytes waiting in the send queue. */
  get pendingSendBytes(): number {
    let n = 0;
    for (const w of this.#writes) n += w.data.length;
    return n;
  }

  /**
   * Reads exactly `n` bytes, collecting up to `maxFds` fds per recvmsg call.
   * Resolves null on end of stream (or local close) before the first byte; rejects with
   * ERR_SOCKET_EOF if the stream ends in the middle, ERR_FDS_TRUNCATED if the peer sent
   * more fds than maxFds (the fds received are closed then), ERR_READ_PENDING if another
   * read is pending, or a NativeError (e.g. ECONNRESET).
   */
  readExactly(n: number, maxFds = 8): Promise<FdMessage | null> {
    if (!Number.isSafeInteger(n) || n < 0) return Promise.reject(new RangeError(`bad length ${n}`));
    return this.readInto(Buffer.allocUnsafe(n), maxFds);
  }

  /**
   * Like readExactly, into the caller's buffer (filled completely): no allocation for the
   * bytes. The resolved `data` is a Buffer over `target`.
   */
  readInto(target: Uint8Array, maxFds = 8): Promise<FdMessage | null> {
    if (this.#fd < 0) return Promise.reject(new FdSocketError('socket is closed', 'ERR_SOCKET_CLOSED'));
    if (this.#read) return Promise.reject(new FdSocketError('a read is already pending', 'ERR_READ_PENDING'));
    const buf = Buffer.from(target.buffer, target.byteOffset, target.byteLength);
    if (buf.length === 0) return Promise.resolve({ data: buf, fds: [] });
    return new Promise((resolve, reject) => {
      this.#read = { buf, got: 0, fds: [], maxFds, resolve, reject };
      this.#pumpRead();
      this.#updateInterest();
    });
  }

  /**
   * Sends `data` with `fds` (SCM_RIGHTS, attached to the first byte). Returns true if the
   * kernel took everything now; false if the rest was queued (sent when the socket is
   * writable; 'drain' follows). Queued bytes are copied, so `data` may be reused at once;
   * queued fds are not duplicated and must stay open until they are sent ('drain').
   * Throws a NativeError (e.g. EPIPE) if the socket fails now.
   */
  send(data: Uint8Array, fds: readonly number[] = []): boolean {
    if (this.#fd < 0) throw new FdSocketError('socket is closed', 'ERR_SOCKET_CLOSED');
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (this.#writes.length === 0) {
      const sent = sendMsg(this.#fd, buf, fds);
      if (sent === buf.length) return true;
      // Queued bytes are copied: the caller may reuse its buffer as soon as send() returns.
      if (sent > 0) this.#writes.push({ data: Buffer.from(buf.subarray(sent)), fds: [] });
      else this.#writes.push({ data: Buffer.from(buf), fds });
    } else {
      this.#writes.push({ data: Buffer.from(buf), fds });
    }
    this.#updateInterest();
    return false;
  }

  /** Lets this socket not keep the process alive while it waits. */
  unref(): this {
    this.#watcher.unref();
    return this;
  }

  ref(): this {
    this.#watcher.ref();
    return this;
  }

  /**
   * Closes the socket. A pending read resolves null (its fds are closed); queued sends
   * are dropped. Emits 'close' once. Idempotent.
   */
  close(): void {
    if (this.#fd < 0) return;
    this.#watcher.stop();
    const fd = this.#fd;
    this.#fd = -1;
    this.#writes = [];
    const r = this.#read;
    this.#read = null;
    closeFd(fd);
    if (r) {
      closeAll(r.fds);
      r.resolve(null);
    }
    this.emit('close');
  }

  #onPoll(err: NativeError | null, events: number): void {
    if (this.#fd < 0) return;
    if (err) {
      this.#interest = 0; // the native watcher paused itself
      this.#failRead(err);
      if (this.#writes.length > 0) this.#failWrites(err);
      return;
    }
    if (events & WRITABLE) this.#pumpWrites();
    if (this.#fd >= 0 && events & READABLE) this.#pumpRead();
    if (this.#fd >= 0) this.#updateInterest();
  }

  #pumpRead(): void {
    const r = this.#read;
    if (!r || this.#fd < 0) return;
    while (r.got < r.buf.length) {
      let res;
      try {
        res = recvMsg(this.#fd, r.buf.subarray(r.got), r.maxFds);
      } catch (err) {
        this.#failRead(err as Error);
        return;
      }
      for (const fd of res.fds) r.fds.push(fd);
      if (res.fdsTruncated) {
        this.#failRead(new FdSocketError(`peer sent more than ${r.maxFds} fds with one message`, 'ERR_FDS_TRUNCATED'));
        return;
      }
      if (res.bytes < 0) return; // wait for READABLE
      if (res.bytes === 0) {
        if (r.got === 0 && r.fds.length === 0) {
          this.#read = null;
          r.resolve(null);
        } else {
          this.#failRead(new FdSocketError(`end of stream after ${r.got} of ${r.buf.length} bytes`, 'ERR_SOCKET_EOF'));
        }
        return;
      }
      r.got += res.bytes;
    }
    this.#read = null;
    r.resolve({ data: r.buf, fds: r.fds });
  }

  #failRead(err: Error): void {
    const r = this.#read;
    if (!r) return;
    this.#read = null;
    closeAll(r.fds);
    r.reject(err);
  }

  #pumpWrites(): void {
    while (this.#writes.length > 0 && this.#fd >= 0) {
      const w = this.#writes[0]!;
      let sent: number;
      try {
        sent = sendMsg(this.#fd, w.data, w.fds);
      } catch (err) {
        this.#failWrites(err as Error);
        return;
      }
      if (sent < 0) return;
      if (sent === w.data.length) this.#writes.shift();
      else this.#writes[0] = { data: w.data.subarray(sent), fds: [] };
    }
    if (this.#writes.length === 0) this.emit('drain');
  }

  #failWrites(err: Error): void {
    this.#writes = [];
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else this.close(); // nobody listens for errors: a dead socket is closed, not thrown
  }

  #updateInterest(): void {
    if (this.#fd < 0) return;
    const want = (this.#read ? READABLE : 0) | (this.#writes.length > 0 ? WRITABLE : 0);
    if (want === this.#interest && this.#watcher.active === (want !== 0)) return;
    this.#interest = want;
    if (want === 0) this.#watcher.pause();
    else this.#watcher.resume(want);
  }
}

// ---- UnixFdServer ------------------------------------------------------------------------

export interface UnixFdServerOptions {
  backlog?: number;
  /** Unlink the socket path on close() (default true). */
  unlinkOnClose?: boolean;
}

/** A listening Unix stream socket. Events: 'connection' (UnixFdSocket), 'error', 'close'. */
export class UnixFdServer extends EventEmitter {
  #fd: number;
  #watcher: FdWatcher | null;
  readonly path: string;
  readonly #unlinkOnClose: boolean;

  private constructor(fd: number, path: string, unlinkOnClose: boolean) {
    super();
    this.#fd = fd;
    this.path = path;
    this.#unlinkOnClose = unlinkOnClose;
    this.#watcher = watchFd(fd, (err) => this.#onPoll(err), READABLE);
  }

  /** Binds and listens on `path` (which must not exist yet). */
  static listen(path: string, opts: UnixFdServerOptions = {}): UnixFdServer {
    const fd = unixListen(path, opts.backlog ?? 16);
    try {
      return new UnixFdServer(fd, path, opts.unlinkOnClose ?? true);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  get fd(): number {
    return this.#fd;
  }

  unref(): this {
    this.#watcher?.unref();
    return this;
  }

  ref(): this {
    this.#watcher?.ref();
    return this;
  }

  /** Stops accepting, closes the listening fd (and unlinks the path). Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#watcher?.stop();
    this.#watcher = null;
    const fd = this.#fd;
    this.#fd = -1;
    closeFd(fd);
    if (this.#unlinkOnClose) {
      try {
        unlinkSync(this.path);
      } catch {
        // someone removed it already
      }
    }
    this.emit('close');
  }

  #onPoll(err: NativeError | null): void {
    if (err) {
      this.emit('error', err);
      return;
    }
    while (this.#fd >= 0) {
      let fd: number;
      try {
        fd = unixAccept(this.#fd);
      } catch (e) {
        this.emit('error', e);
        return;
      }
      if (fd < 0) return;
      let sock: UnixFdSocket;
      try {
        sock = new UnixFdSocket(fd);
      } catch (e) {
        closeFd(fd);
        this.emit('error', e);
        return;
      }
      this.emit('connection', sock);
    }
  }
}
