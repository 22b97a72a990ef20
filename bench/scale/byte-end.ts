// One end of a connection as the scale bench drives it, whatever it is: a guest-side
// RawVsockConnection (our driver without node:stream), or a node:stream Duplex (a host
// net.Socket, a guest-side VsockSocket). The load code sees only this.
import type { Duplex } from 'node:stream';
import type { RawVsockConnection } from '../../drivers/virtio-vsock/driver/raw-connection.js';

export interface EndHandlers {
  data(chunk: Buffer): void;
  /** The peer sends no more. */
  end(): void;
  /** write() returned false and the bytes written have gone out since. */
  drain(): void;
  /** Gone; err is null for an orderly close. The last call. */
  close(err: Error | null): void;
}

export interface ByteEnd {
  setHandlers(h: EndHandlers): void;
  /** false: wait for drain. */
  write(chunk: Uint8Array): boolean;
  /** Half-close after what was written. */
  end(): void;
  destroy(): void;
}

export function rawEnd(conn: RawVsockConnection): ByteEnd {
  return {
    setHandlers: (h) => conn.setHandlers({ onData: h.data, onEnd: h.end, onDrain: h.drain, onClose: h.close }),
    write: (chunk) => conn.write(chunk),
    end: () => conn.end(),
    destroy: () => conn.destroy(),
  };
}

export function streamEnd(s: Duplex): ByteEnd {
  let error: Error | null = null;
  let handlers: EndHandlers | null = null;
  let closed = false;
  // Listeners are added once and call whichever handlers are current: removing a
  // stream's listeners could remove its own (net.Socket listens to 'end' itself).
  s.on('error', (e: Error) => (error ??= e));
  s.on('close', () => {
    closed = true;
    handlers?.close(error);
  });
  return {
    setHandlers(h) {
      const first = handlers === null;
      handlers = h;
      if (!first) return;
      s.on('data', (c: Buffer) => handlers!.data(c));
      s.on('end', () => handlers!.end());
      s.on('drain', () => handlers!.drain());
      if (closed) queueMicrotask(() => h.close(error));
    },
    write: (chunk) => s.write(chunk),
    end: () => {
      if (!s.writableEnded) s.end();
    },
    destroy: () => s.destroy(),
  };
}
