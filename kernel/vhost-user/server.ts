// A device-agnostic vhost-user back-end server (QEMU docs/interop/vhost-user.rst).
//
//   const server = await startVhostUserServer({ socketPath, model, log });
//   server.on('protocol-error', (err, clientId) => ...);
//   ...
//   await server.close();
//
// startVhostUserServer(options): Promise<VhostUserServer>
//   options.socketPath   Unix socket to listen on. A stale socket file (nobody listening)
//                        is removed first; a live one is refused (EADDRINUSE).
//   options.model        the VirtioDeviceModel behind the socket. Its features (plus
//                        VHOST_USER_F_PROTOCOL_FEATURES, bit 30) answer GET_FEATURES, its
//                        config() answers GET_CONFIG, numQueues answers GET_QUEUE_NUM and
//                        bounds ring indexes, maxQueueSize bounds SET_VRING_NUM. The server
//                        calls activate / queueReady / kick / queueStopped / reset on it.
//   options.log          (level, message) => void; default: info and above to stderr.
//   options.protocolFeatures  offered protocol features (default REPLY_ACK | CONFIG).
//   options.pollIntervalMs    kick polling for rings without a kick fd (default 1).
//   options.memoryTableTimeoutMs  warn (ERR_VHOST_USER_MEMORY_NOT_SHARED) when no SET_MEM_TABLE
//                        follows SET_FEATURES within this time (default 3000).
//   options.maxWaitingClients front-ends queued while one is served (default 4; more are closed).
//
// One front-end (QEMU) is served at a time. Others that connect meanwhile wait, unread,
// until it leaves; then the next is served, with a freshly reset model.
//
// VhostUserServer events (all synchronous, on the main thread):
//   'client-connected'    (clientId: number)
//   'client-disconnected' (clientId: number, end: SessionEnd)  end.reason 'eof' | 'closed' | 'error'
//   'protocol-error'      (err: VhostUserError, clientId)  the client was dropped for it
//   'warning'             (err: VhostUserError, clientId)  e.g. ERR_VHOST_USER_MEMORY_NOT_SHARED
//   'device-error'        (err: VhostUserError, clientId)  the model threw; serving goes on
//   'memory-mapped'       (clientId, description: string)
//   'ring-started'        (clientId, index)   a VirtqueueDevice was handed to model.queueReady
//   'ring-stopped'        (clientId, index)   model.queueStopped was called
//   'error'               (err)  the listening socket failed (only if someone listens)
import { EventEmitter } from 'node:events';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { type UnixFdSocket, UnixFdServer } from '../native/fd-watch.js';
import { close as closeFd, unixConnect } from '../native/index.js';
import type { VirtioDeviceModel } from '../transport/virtio-device.js';
import { VhostUserError } from './errors.js';
import { DEFAULT_PROTOCOL_FEATURES, type SessionEnd, type VhostUserLogger, VhostUserSession } from './session.js';

export type { SessionEnd, VhostUserLogger, LogLevel } from './session.js';

export interface VhostUserServerOptions {
  socketPath: string;
  model: VirtioDeviceModel;
  log?: VhostUserLogger;
  protocolFeatures?: bigint;
  pollIntervalMs?: number;
  memoryTableTimeoutMs?: number;
  maxWaitingClients?: number;
}

const defaultLog: VhostUserLogger = (level, message) => {
  if (level !== 'debug') process.stderr.write(`vhost-user ${level}: ${message}\n`);
};

export class VhostUserServer extends EventEmitter {
  readonly socketPath: string;
  readonly model: VirtioDeviceModel;
  readonly #listener: UnixFdServer;
  readonly #log: VhostUserLogger;
  readonly #protocolFeatures: bigint;
  readonly #pollIntervalMs: number;
  readonly #memoryTableTimeoutMs: number;
  readonly #maxWaiting: number;
  readonly #waiting: UnixFdSocket[] = [];
  #current: { session: VhostUserSession; done: Promise<void> } | null = null;
  #nextId = 1;
  #closed = false;

  /** Use startVhostUserServer(). */
  constructor(listener: UnixFdServer, opts: VhostUserServerOptions) {
    super();
    this.socketPath = opts.socketPath;
    this.model = opts.model;
    this.#listener = listener;
    this.#log = opts.log ?? defaultLog;
    this.#protocolFeatures = opts.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES;
    this.#pollIntervalMs = opts.pollIntervalMs ?? 1;
    this.#memoryTableTimeoutMs = opts.memoryTableTimeoutMs ?? 3000;
    this.#maxWaiting = opts.maxWaitingClients ?? 4;
    listener.on('connection', (sock: UnixFdSocket) => this.#onConnection(sock));
    listener.on('error', (err: Error) => {
      this.#log('error', `listening socket ${this.socketPath}: ${err.message}`);
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
  }

  /** The id of the client being served, or null. */
  get currentClient(): number | null {
    return this.#current?.session.id ?? null;
  }

  /** Front-ends waiting for the current one to leave. */
  get waitingClients(): number {
    return this.#waiting.length;
  }

  /** Drops the client being served (it is cleaned up; the next waiting one is served). */
  async disconnectCurrent(): Promise<void> {
    const cur = this.#current;
    if (!cur) return;
    cur.session.close();
    await cur.done;
  }

  /**
   * Stops listening, drops the current and waiting clients (the model is reset, memory
   * unmapped, every fd closed) and removes the socket file. Idempotent.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#listener.close();
      for (const s of this.#waiting.splice(0)) s.close();
    }
    const cur = this.#current;
    if (cur) {
      cur.session.close();
      await cur.done;
    }
  }

  #onConnection(sock: UnixFdSocket): void {
    if (this.#closed) {
      sock.close();
      return;
    }
    if (this.#current) {
      if (this.#waiting.length >= this.#maxWaiting) {
        this.#log('warn', `${this.socketPath}: a front-end connected while one is served and ${this.#waiting.length} wait: closed`);
        sock.close();
        return;
      }
      this.#log('info', `${this.socketPath}: a front-end connected while one is served: it waits`);
      this.#waiting.push(sock);
      return;
    }
    this.#serve(sock);
  }

  #serve(sock: UnixFdSocket): void {
    const id = this.#nextId++;
    const session = new VhostUserSession(
      id,
      sock,
      this.model,
      {
        log: this.#log,
        ringStarted: (index) => this.emit('ring-started', id, index),
        ringStopped: (index) => this.emit('ring-stopped', id, index),
        memoryMapped: (description) => this.emit('memory-mapped', id, description),
        warning: (err) => {
          this.#log('warn', `client ${id}: ${err.code}: ${err.message}`);
          this.emit('warning', err, id);
        },
        deviceError: (err) => this.emit('device-error', err, id),
      },
      { protocolFeatures: this.#protocolFeatures, pollIntervalMs: this.#pollIntervalMs, memoryTableTimeoutMs: this.#memoryTableTimeoutMs },
    );
    this.#log('info', `${this.socketPath}: client ${id} connected`);
    const done = session.run().then((end) => this.#onSessionEnd(id, end));
    this.#current = { session, done };
    this.emit('client-connected', id);
  }

  #onSessionEnd(id: number, end: SessionEnd): void {
    this.#current = null;
    if (end.error) {
      this.#log('error', `client ${id} dropped: ${end.error.code}: ${end.error.message}`);
      this.emit('protocol-error', end.error, id);
    } else {
      this.#log('info', `client ${id} ${end.reason === 'eof' ? 'disconnected' : 'closed'}`);
    }
    this.emit('client-disconnected', id, end);
    if (this.#closed) return;
    // Serve the next waiting front-end that is still there.
    const next = this.#waiting.shift();
    if (next) this.#serve(next);
  }
}

/** Removes `path` if it is a socket nobody listens on (left by a process that died). */
function removeStaleSocket(path: string): void {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new VhostUserError('ERR_VHOST_USER_SOCKET', `${path} exists and is not a socket`);
  let fd = -1;
  try {
    fd = unixConnect(path);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ECONNREFUSED') {
      unlinkSync(path);
      return;
    }
    throw err;
  } finally {
    if (fd >= 0) closeFd(fd);
  }
  throw new VhostUserError('ERR_VHOST_USER_SOCKET', `${path}: another back-end is listening there`);
}

export async function startVhostUserServer(opts: VhostUserServerOptions): Promise<VhostUserServer> {
  removeStaleSocket(opts.socketPath);
  const listener = UnixFdServer.listen(opts.socketPath, { backlog: 4 });
  return new VhostUserServer(listener, opts);
}
