// Connects to a guest vsock port through the daemon's hybrid Unix socket (the
// Firecracker convention): write "CONNECT <port>\n", read "OK <host_port>\n", then
// the socket is a byte stream to the guest port. "ERR ..." or anything else fails.
import { type Socket, createConnection } from 'node:net';

const MAX_REPLY_BYTES = 128;

export class HybridConnectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HybridConnectError';
  }
}

export function connectHybridVsock(path: string, guestPort: number, timeoutMs = 10_000): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    let reply = Buffer.alloc(0);
    const timer = setTimeout(() => fail(`no reply to CONNECT ${guestPort} within ${timeoutMs} ms`), timeoutMs);
    const fail = (msg: string) => {
      cleanup();
      socket.destroy();
      reject(new HybridConnectError(`${path}: ${msg}`));
    };
    const onError = (err: Error) => fail(err.message);
    const onEnd = () => fail(`closed before replying to CONNECT ${guestPort}`);
    const onData = (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      const nl = reply.indexOf(0x0a);
      if (nl < 0) {
        if (reply.length > MAX_REPLY_BYTES) fail('reply line too long');
        return;
      }
      const line = reply.toString('latin1', 0, nl).trim();
      if (!/^OK \d+$/.test(line)) return fail(`CONNECT ${guestPort} refused: ${JSON.stringify(line)}`);
      cleanup();
      const rest = reply.subarray(nl + 1);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
    };
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.once('connect', () => {
      socket.on('data', onData);
      socket.write(`CONNECT ${guestPort}\n`);
    });
  });
}
