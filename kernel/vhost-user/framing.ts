// Reads one vhost-user message from a Unix stream socket: exactly the 12-byte header,
// then exactly `size` payload bytes, with every fd that arrived meanwhile.
//
// Linux delivers SCM_RIGHTS fds with the first byte of the sendmsg() that carried them
// and never merges bytes across such a boundary in one recvmsg(), so reading a header on
// its own collects exactly that message's fds (vhost-user.rst "Communication": fds are
// "passed in the ancillary data of the message").
import { FdSocketError, type UnixFdSocket } from '../native/fd-watch.js';
import { close as closeFd } from '../native/index.js';
import { checkHeader, decodeHeader, decodePayload, type VhostUserMessage } from './codec.js';
import { VhostUserError } from './errors.js';
import { HEADER_SIZE, MAX_FDS_PER_MESSAGE, requestName } from './protocol.js';

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed: nothing to do
    }
  }
}

function socketError(err: unknown, where: string): VhostUserError {
  if (err instanceof VhostUserError) return err;
  if (err instanceof FdSocketError) {
    if (err.code === 'ERR_SOCKET_EOF') return new VhostUserError('ERR_VHOST_USER_TRUNCATED', `${where}: ${err.message}`);
    if (err.code === 'ERR_FDS_TRUNCATED') return new VhostUserError('ERR_VHOST_USER_FDS', `${where}: ${err.message}`);
  }
  const e = err as Error & { code?: string };
  return new VhostUserError('ERR_VHOST_USER_SOCKET', `${where}: ${e.code ?? ''}${e.code ? ' ' : ''}${e.message}`);
}

/**
 * The next message, or null at a clean end of stream (between messages). Rejects with a
 * VhostUserError for a truncated or invalid message; fds received with it are closed
 * then. On success the caller owns the message's fds.
 */
export async function readMessage(socket: UnixFdSocket): Promise<VhostUserMessage | null> {
  let head;
  try {
    head = await socket.readExactly(HEADER_SIZE, MAX_FDS_PER_MESSAGE);
  } catch (err) {
    throw socketError(err, 'reading a message header');
  }
  if (head === null) return null;
  const fds = head.fds;
  try {
    const h = decodeHeader(head.data);
    checkHeader(h);
    if (h.size > 0) {
      let body;
      try {
        body = await socket.readExactly(h.size, MAX_FDS_PER_MESSAGE);
      } catch (err) {
        throw socketError(err, `reading the ${h.size}-byte payload of ${requestName(h.request)}`);
      }
      if (body === null) {
        throw new VhostUserError('ERR_VHOST_USER_TRUNCATED', `${requestName(h.request)}: end of stream before its ${h.size}-byte payload`, h.request);
      }
      fds.push(...body.fds);
      if (fds.length > MAX_FDS_PER_MESSAGE) {
        throw new VhostUserError('ERR_VHOST_USER_FDS', `${requestName(h.request)}: ${fds.length} fds, at most ${MAX_FDS_PER_MESSAGE}`, h.request);
      }
      return decodePayload(h, body.data, fds);
    }
    return decodePayload(h, new Uint8Array(0), fds);
  } catch (err) {
    closeFds(fds);
    throw err;
  }
}
