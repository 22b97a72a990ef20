// tsvirtio/guest: the API of a program run by `npx tsvirtio run APP` (README.md here).
//
//   import { listen, connect, createServer, serve, files, exit } from 'tsvirtio/guest';
//
// vsock sockets with the shapes of node:net (VsockServer ~ net.Server, VsockSocket ~
// net.Socket: a Duplex with 'connect', end(), setTimeout(), remoteAddress...), the
// folders the host shares with node:fs/promises shapes (read-only), the transmit mode,
// DMA buffers, and exit(). `tsvirtio run` bundles the program with esbuild and resolves
// 'tsvirtio/guest' to this file; the runtime it talks to is installed by the guest's
// launcher (launcher.ts) before the program's first line runs.
import type { ConnectOptions, TxMode, VsockServer, VsockSocket } from '../../drivers/virtio-vsock/index.js';
import { GuestApiError } from './errors.js';
import { currentRuntime, runtimeInstalled, type SharedFolder } from './runtime-api.js';

export type { ConnectOptions, TxMode, VsockServer, VsockSocket } from '../../drivers/virtio-vsock/index.js';
export type { FsDirent, FsError, FsStats, VirtioFsFileHandle as FileHandle } from '../../drivers/virtio-fs/driver/index.js';
export { GuestApiError, type GuestApiErrorCode } from './errors.js';
export type { SharedFolder } from './runtime-api.js';

/** The host's CID: connect(port) reaches the host (the daemon's `<uds>_<port>` listener). */
export const HOST_CID = 2;

/** True inside a guest started by `tsvirtio run` (false on the host, e.g. in a unit test). */
export function inGuest(): boolean {
  return runtimeInstalled();
}

/** A vsock server, like net.createServer(): call listen(port) on it. */
export function createServer(onConnection?: (socket: VsockSocket) => void): VsockServer {
  return currentRuntime('createServer()').createServer(onConnection);
}

/** A vsock server listening on `port` (net.createServer(onConnection).listen(port)); 'listening' follows. */
export function listen(port: number, onConnection?: (socket: VsockSocket) => void): VsockServer {
  checkPort(port, 'listen()', 0);
  return currentRuntime('listen()').createServer(onConnection).listen(port);
}

/** What serve() needs of a server: node:http's and node:https's Server have it. */
export interface ConnectionSink {
  emit(event: 'connection', socket: VsockSocket): boolean;
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Serves an http.Server (or https.Server, or anything taking 'connection' events) on vsock
 * `port`: `serve(http.createServer(handler), 80)`. node:http's own listen() binds only
 * TCP, so the vsock server's connections are handed to it ('connection' events).
 * server.close() stops the vsock listener too; the returned server's 'close' follows
 * when its last connection has closed.
 */
export function serve(server: ConnectionSink, port: number, onListening?: () => void): VsockServer {
  const vsock = listen(port, (socket) => server.emit('connection', socket));
  if (onListening) vsock.once('listening', onListening);
  server.once('close', () => {
    if (vsock.listening) vsock.close();
  });
  return vsock;
}

/** connect()'s options: the port, the CID (default HOST_CID), a timeout, socket options. */
export type ConnectTo = Omit<ConnectOptions, 'cid'> & { cid?: number };

/** Connects to `port` of `cid` (default the host), like net.connect(port, host, onConnect). */
export function connect(port: number, cid?: number, onConnect?: () => void): VsockSocket;
export function connect(options: ConnectTo, onConnect?: () => void): VsockSocket;
export function connect(a: number | ConnectTo, b?: number | (() => void), c?: () => void): VsockSocket {
  const options: ConnectOptions = typeof a === 'number' ? { port: a, cid: typeof b === 'number' ? b : HOST_CID } : { ...a, cid: a.cid ?? HOST_CID };
  const onConnect = typeof b === 'function' ? b : c;
  checkPort(options.port, 'connect()', 1);
  return currentRuntime('connect()').connect(options, onConnect);
}

/** The shared folder with this tag (`--share DIR:TAG`); ERR_TSVIRTIO_NO_SHARE when there is none. */
export function share(tag: string): SharedFolder {
  const rt = currentRuntime(`share(${JSON.stringify(tag)})`);
  const found = rt.shares.find((s) => s.tag === tag);
  if (found === undefined) {
    const have = rt.shares.map((s) => JSON.stringify(s.tag)).join(', ');
    throw new GuestApiError('ERR_TSVIRTIO_NO_SHARE', `no shared folder with tag ${JSON.stringify(tag)} (${have ? `the shares: ${have}` : 'none was shared: start the program with --share DIR[:TAG]'})`);
  }
  return found;
}

/** The tags of the shared folders, in the order of the --share flags. */
export function shares(): string[] {
  return currentRuntime('shares()').shares.map((s) => s.tag);
}

/** The first shared folder (`--share DIR`): ERR_TSVIRTIO_NO_SHARE when the program was started without one. */
function firstShare(what: string): SharedFolder {
  const s = currentRuntime(`files.${what}`).shares[0];
  if (s === undefined) throw new GuestApiError('ERR_TSVIRTIO_NO_SHARE', `files.${what}: no shared folder (start the program with --share DIR)`);
  return s;
}

/** The first shared folder, read-only, with node:fs/promises shapes; paths are relative to its root. */
export const files: SharedFolder = {
  get tag(): string {
    return firstShare('tag').tag;
  },
  readFile: ((path: string, options?: never) => call(() => firstShare('readFile()').readFile(path, options))) as SharedFolder['readFile'],
  stat: (path) => call(() => firstShare('stat()').stat(path)),
  lstat: (path) => call(() => firstShare('lstat()').lstat(path)),
  readdir: ((path: string, options?: never) => call(() => firstShare('readdir()').readdir(path, options))) as SharedFolder['readdir'],
  readlink: (path) => call(() => firstShare('readlink()').readlink(path)),
  open: (path, flags) => call(() => firstShare('open()').open(path, flags)),
  statfs: (path) => call(() => firstShare('statfs()').statfs(path)),
};

/** A failure to find the share as a rejection, as fs/promises reports errors. */
function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (e) {
    return Promise.reject(e);
  }
}

/** How the vsock driver transmits: auto (default), two-copy, single-copy or zero-copy (`--tx-mode`). */
export function txMode(): TxMode {
  return currentRuntime('txMode()').txMode;
}

/**
 * A buffer in DMA memory. Written to a vsock socket it goes to the device by descriptor,
 * without a copy (in tx modes auto and zero-copy), and its write callback fires when the
 * device is done with it. Reuse it after that, or give it back with freeBuffer().
 */
export function allocBuffer(size: number): Buffer {
  return currentRuntime('allocBuffer()').allocBuffer(size);
}

export function freeBuffer(buffer: Uint8Array): void {
  currentRuntime('freeBuffer()').freeBuffer(buffer);
}

/** This guest's vsock CID. */
export function cid(): number {
  return currentRuntime('cid()').cid;
}

/**
 * Ends the program now with `status` (0-255), as process.exit() does: the devices are
 * reset (bytes not yet sent are dropped) and the guest powers off; `tsvirtio run` exits
 * with the same status. To end after the last reply went out, return from main instead.
 */
export function exit(status = 0): never {
  if (!Number.isInteger(status) || status < 0 || status > 255) throw new GuestApiError('ERR_TSVIRTIO_ARGUMENT', `exit(${String(status)}): expected a status 0..255`);
  return currentRuntime('exit()').exit(status);
}

function checkPort(port: number, what: string, min: number): void {
  if (!Number.isInteger(port) || port < min || port > 0xfffffffe) throw new GuestApiError('ERR_TSVIRTIO_ARGUMENT', `${what}: expected a vsock port ${min}..4294967294, got ${String(port)}`);
}
