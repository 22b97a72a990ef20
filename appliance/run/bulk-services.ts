// Two throughput services for the guest benchmark, on any listener giving Duplex sockets:
//   sink (host -> guest): reads and discards until the client ends, then answers the
//     byte count as decimal text + "\n" and ends;
//   source (guest -> host): reads "<bytes> <chunk>\n", writes that many bytes in writes
//     of `chunk` bytes (from buffers made by `alloc`: DMA memory with our driver, so
//     the auto mode sends them without a copy), then ends.
import type { Duplex } from 'node:stream';

type Listen = (port: number, onSocket: (s: Duplex) => void) => unknown;

export interface BulkOptions {
  listen: Listen;
  sinkPort: number;
  sourcePort: number;
  /** Buffers to send from (default Buffer.alloc). */
  alloc?: (size: number) => Buffer;
}

const MAX_CHUNK = 1024 * 1024;
/** Writes in flight at once on the source. */
const WINDOW = 8;

export async function runBulkServices(o: BulkOptions): Promise<void> {
  await o.listen(o.sinkPort, (s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(`${n}\n`));
    s.on('error', () => {});
  });
  await o.listen(o.sourcePort, (s) => {
    let line = '';
    s.on('error', () => {});
    const onData = (d: Buffer): void => {
      line += d.toString('latin1');
      const nl = line.indexOf('\n');
      if (nl < 0) {
        if (line.length > 64) s.destroy();
        return;
      }
      s.off('data', onData);
      s.resume();
      const m = /^(\d{1,12}) (\d{1,8})$/.exec(line.slice(0, nl));
      if (!m || Number(m[2]) < 1 || Number(m[2]) > MAX_CHUNK) {
        s.end('bad request\n');
        return;
      }
      const total = Number(m[1]);
      const chunk = Number(m[2]);
      // A window of buffers in flight, refilled from each write's completion callback
      // (with zero copy a write completes only when the device has returned the buffer,
      // so waiting for 'drain' would leave one buffer in flight at a time). The bytes
      // never change, so a buffer may go out again while still in flight.
      const bufs = Array.from({ length: WINDOW }, (_, i) => {
        const b = o.alloc ? o.alloc(chunk) : Buffer.alloc(chunk);
        b.fill(0x61 + i);
        return b;
      });
      let sent = 0;
      let inFlight = 0;
      let which = 0;
      let ended = false;
      const pump = (): void => {
        if (s.destroyed) return;
        while (sent < total && inFlight < WINDOW) {
          const n = Math.min(chunk, total - sent);
          const b = bufs[which]!;
          which = (which + 1) % WINDOW;
          sent += n;
          inFlight++;
          s.write(n === chunk ? b : b.subarray(0, n), () => {
            inFlight--;
            pump();
          });
        }
        if (sent >= total && !ended) {
          ended = true;
          s.end();
        }
      };
      pump();
    };
    s.on('data', onData);
  });
}
