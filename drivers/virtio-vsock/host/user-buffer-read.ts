// Reading a net.Socket into a buffer that is reused, instead of a new Buffer per read.
// Node offers this as the `onread` option of `new net.Socket()`/`net.connect()` only;
// sockets a server accepts (the hybrid Unix socket, the TCP forward) have no way in. They
// get the same state the option sets: the socket's kBuffer/kBufferCb/kBufferGen fields
// (own symbol properties on every Socket, found by their descriptions) and the handle's
// useUserBuffer(). The socket then behaves as documented for `onread`: `onBytes` sees each
// read, returning false pauses reading, resume() starts it again, 'end' still comes.
// Checked on Node 20 by tests/host-user-buffer-read.test.ts; where the fields are not
// found the caller falls back to 'data' events (adoptUserBuffer returns false).
import { Socket } from 'node:net';

interface OnreadFields {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let fields: OnreadFields | null | undefined;

function onreadFields(): OnreadFields | null {
  if (fields !== undefined) return fields;
  const probe = new Socket();
  const own = Object.getOwnPropertySymbols(probe);
  const find = (d: string): symbol | undefined => own.find((s) => s.description === d);
  const buffer = find('kBuffer');
  const callback = find('kBufferCb');
  const generator = find('kBufferGen');
  probe.destroy();
  fields = buffer && callback && generator ? { buffer, callback, generator } : null;
  return fields;
}

interface UserBufferHandle {
  useUserBuffer?(buf: Uint8Array): void;
}

/**
 * Makes `socket` read into `buffer` from now on: `onBytes(buffer, n)` gets each read as
 * buffer[0, n), valid only during the call (copy what you keep; no view is made per read). Bytes the socket read in before
 * are not seen here: drain them with socket.read() first. Returns false (and changes
 * nothing) when this Node has no such path or the socket has no handle yet.
 */
export function adoptUserBuffer(socket: Socket, buffer: Buffer, onBytes: (buffer: Buffer, n: number) => boolean): boolean {
  const f = onreadFields();
  const handle = (socket as unknown as { _handle: UserBufferHandle | null })._handle;
  if (f === null || handle === null || typeof handle.useUserBuffer !== 'function') return false;
  const s = socket as unknown as Record<symbol, unknown>;
  s[f.buffer] = buffer;
  s[f.generator] = null;
  s[f.callback] = (n: number, buf: Buffer): boolean => onBytes(buf, n);
  handle.useUserBuffer(buffer);
  return true;
}
