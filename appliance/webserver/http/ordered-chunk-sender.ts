// Sends a response body as a sequence of chunks, in order, with reads running ahead:
// up to `window` chunks are being read or written at once (under TCG each FUSE_READ
// is a round trip through the emulator; three of them in parallel cost about one).
// A chunk's memory goes back (release) only in its write callback; when sending
// fails, reads still running are let finish before their buffers are given back, so
// no buffer is reused while a device may still write into it.
import type { SocketOutput } from './socket-output.js';

export interface ReadyChunk {
  readonly bytes: Uint8Array;
  release(): void;
}

/**
 * startRead(i) reads chunk i (releasing what it took if it fails); write(i, chunk, done)
 * writes it and must arrange for done() to run in the write callback; it returns
 * socket.write's result.
 */
export async function sendChunksInOrder(
  out: SocketOutput,
  count: number,
  window: number,
  startRead: (i: number) => Promise<ReadyChunk>,
  write: (i: number, chunk: ReadyChunk, done: () => void) => boolean,
): Promise<void> {
  let inFlight = 0;
  let started = 0;
  const reads = new Array<Promise<ReadyChunk> | undefined>(count);
  const startMore = (): void => {
    while (started < count && inFlight < window) {
      inFlight++;
      const p = startRead(started);
      p.catch(() => {}); // settled below, in order; no unhandled rejection meanwhile
      reads[started++] = p;
    }
  };
  let w = 0;
  try {
    for (; w < count; w++) {
      startMore();
      while (started === w) {
        // The window is full of writes still in flight: wait for one to complete.
        out.check();
        await out.waitEvent();
        startMore();
      }
      let chunk: ReadyChunk;
      try {
        chunk = await reads[w]!;
      } catch (err) {
        inFlight--;
        throw err;
      } finally {
        reads[w] = undefined;
      }
      try {
        out.check();
      } catch (err) {
        chunk.release();
        inFlight--;
        throw err;
      }
      const c = chunk;
      const ok = write(w, c, () => {
        c.release();
        inFlight--;
        out.wake();
      });
      if (!ok) await out.waitDrain();
    }
  } catch (err) {
    for (let i = w + 1; i < started; i++) {
      try {
        (await reads[i]!).release();
      } catch {
        // that read failed and released its own memory
      }
    }
    throw err;
  }
}
