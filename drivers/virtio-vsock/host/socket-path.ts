// Unix socket paths a host end listens on: made ready before listen(), and listen
// errors that name the path and say why.
//
// A socket file left by a process that died (kill -9 leaves it: nothing unlinks it) is
// removed, but only when nothing listens on it: a connect probe that is refused
// (ECONNREFUSED) proves it stale. A path where a process listens is refused (never
// taken over from a live daemon), and a path that is not a socket (a regular file, a
// folder...) is never deleted.
import { lstatSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { connect, type Server } from 'node:net';
import { dirname } from 'node:path';

export type SocketPathErrorCode =
  | 'ERR_VSOCK_SOCKET_FOLDER' // the folder of the path does not exist or is not a folder
  | 'ERR_VSOCK_SOCKET_NOT_SOCKET' // the path exists and is not a socket (left alone)
  | 'ERR_VSOCK_SOCKET_IN_USE' // a process listens on the path
  | 'ERR_VSOCK_SOCKET_ACCESS' // permission denied
  | 'ERR_VSOCK_SOCKET'; // any other failure (the system's code is in the message)

export class SocketPathError extends Error {
  constructor(
    readonly code: SocketPathErrorCode,
    /** The socket path at fault. */
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'SocketPathError';
  }
}

function kindOf(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a folder';
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device file';
  return 'not a socket';
}

function checkFolder(path: string, what: string): void {
  const dir = dirname(path);
  let st: Stats;
  try {
    st = statSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new SocketPathError('ERR_VSOCK_SOCKET_FOLDER', path, `${what} ${path}: the folder ${dir} does not exist`);
    if (code === 'EACCES') throw new SocketPathError('ERR_VSOCK_SOCKET_ACCESS', path, `${what} ${path}: permission denied on the folder ${dir}`);
    throw new SocketPathError('ERR_VSOCK_SOCKET', path, `${what} ${path}: cannot look at the folder ${dir}: ${code ?? (e as Error).message}`);
  }
  if (!st.isDirectory()) throw new SocketPathError('ERR_VSOCK_SOCKET_FOLDER', path, `${what} ${path}: ${dir} is not a folder`);
}

/** Resolves true when a process accepts connections on the socket at `path`, false when refused (stale). */
function probe(path: string, what: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      s.destroy();
      if (e.code === 'ECONNREFUSED') resolve(false);
      else if (e.code === 'EACCES') reject(new SocketPathError('ERR_VSOCK_SOCKET_ACCESS', path, `${what} ${path}: permission denied when checking whether the existing socket is in use`));
      else if (e.code === 'EAGAIN') resolve(true); // a full backlog: somebody listens
      else reject(new SocketPathError('ERR_VSOCK_SOCKET', path, `${what} ${path}: cannot check whether the existing socket is in use: ${e.code ?? e.message}`));
    });
  });
}

/**
 * Makes `path` ready for a Unix listener: its folder must exist; a stale socket file is
 * removed (resolves 'stale-removed'); a live socket or a non-socket is refused with a
 * SocketPathError naming the path. `what` names the socket in messages ("hybrid vsock
 * socket").
 */
export async function prepareSocketPath(path: string, what: string): Promise<'free' | 'stale-removed'> {
  checkFolder(path, what);
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'free';
    throw new SocketPathError('ERR_VSOCK_SOCKET', path, `${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isSocket()) {
    throw new SocketPathError('ERR_VSOCK_SOCKET_NOT_SOCKET', path, `${what} ${path}: the path exists and is ${kindOf(st)}, not a socket; it is left alone (remove it or choose another path)`);
  }
  if (await probe(path, what)) {
    throw new SocketPathError('ERR_VSOCK_SOCKET_IN_USE', path, `${what} ${path}: another process is listening there (a daemon already running?); it is left alone`);
  }
  try {
    unlinkSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') throw new SocketPathError(code === 'EACCES' || code === 'EPERM' ? 'ERR_VSOCK_SOCKET_ACCESS' : 'ERR_VSOCK_SOCKET', path, `${what} ${path}: cannot remove the stale socket: ${code ?? (e as Error).message}`);
  }
  return 'stale-removed';
}

/** A listen() failure of a Unix or TCP server, as a SocketPathError (or Error) naming the address. */
export function listenError(e: NodeJS.ErrnoException, what: string, where: string): SocketPathError {
  switch (e.code) {
    case 'EADDRINUSE':
      return new SocketPathError('ERR_VSOCK_SOCKET_IN_USE', where, `${what} ${where}: already in use by another process`);
    case 'EACCES':
    case 'EPERM':
      return new SocketPathError('ERR_VSOCK_SOCKET_ACCESS', where, `${what} ${where}: permission denied`);
    case 'ENOENT':
      return new SocketPathError('ERR_VSOCK_SOCKET_FOLDER', where, `${what} ${where}: the folder does not exist`);
    case 'EADDRNOTAVAIL':
      return new SocketPathError('ERR_VSOCK_SOCKET', where, `${what} ${where}: no such local address`);
    default:
      return new SocketPathError('ERR_VSOCK_SOCKET', where, `${what} ${where}: cannot listen: ${e.code ?? ''}${e.code ? ' ' : ''}${e.message}`);
  }
}

/** server.listen(...args) as a promise; errors name `where` (see listenError). */
export function listenOn(server: Server, what: string, where: string, listen: (done: () => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => reject(listenError(e, what, where));
    server.once('error', onError);
    listen(() => {
      server.off('error', onError);
      resolve();
    });
  });
}
