// Sends a file as a 200 response. Three ways, by size and by what the files offer:
//
//  cached   small files from the LRU cache: head and body in one gathered write.
//  pooled   file bytes read into body buffers from the pool (DMA memory when the pool
//           allocates from the vsock driver). The first buffer carries the head in
//           front of the bytes, so a file that fits is one write of one buffer; each
//           buffer returns to the pool in its write callback.
//  loaned   SiteFileHandle.readLoaned gives file bytes in the file system's own DMA
//           buffers; they go to socket.write as they are and are released in the write
//           callback (file to socket without a copy). The head goes in front, in a small
//           buffer from the body buffers' allocator, in the same gathered write.
//
// At most ctx.maxChunksInFlight chunks of one response are being read or written at
// once (reads run ahead of writes, in parallel); write() false waits for 'drain'.
import { contentTypeOf } from './content-types.js';
import type { HttpRequest } from '../http/http-request.js';
import { responseHead } from '../http/response-head.js';
import type { ServerContext } from '../server/server-context.js';
import type { SiteFileHandle, SiteFileStat } from './site-files.js';
import { type ReadyChunk, sendChunksInOrder } from '../http/ordered-chunk-sender.js';
import type { SocketOutput } from '../http/socket-output.js';

/** The file's size changed between stat and read: the response cannot be completed. */
export class FileChangedError extends Error {
  constructor(path: string) {
    super(`${path} changed size while being sent`);
    this.name = 'FileChangedError';
  }
}

export async function sendFile(ctx: ServerContext, out: SocketOutput, req: HttpRequest, path: string, st: SiteFileStat): Promise<void> {
  const size = st.size;
  const head = responseHead({
    status: 200,
    contentLength: size,
    contentType: contentTypeOf(path),
    close: !req.keepAlive,
    keepAlive10: req.keepAlive && req.minorVersion === 0,
  });
  if (req.method === 'HEAD' || size === 0) {
    out.write(Buffer.from(head, 'latin1'));
    return;
  }
  ctx.stats.fileBodyBytes += size;
  const cache = ctx.cache;
  if (cache !== null && cache.accepts(size)) {
    let entry = cache.get(path, size, st.mtimeMs);
    if (entry !== null) ctx.stats.cacheHits++;
    else {
      const filled = cache.allocate(size);
      try {
        const handle = await ctx.files.open(path);
        try {
          if ((await readFully(handle, filled.body, 0, size, 0)) !== size) throw new FileChangedError(path);
        } finally {
          closeInBackground(handle);
        }
      } catch (err) {
        cache.discard(filled);
        throw err;
      }
      entry = cache.set(path, filled, st.mtimeMs);
    }
    // Held until the write completes: a zero-copy send reads the body until then.
    const held = entry;
    cache.retain(held);
    try {
      out.writeGathered(Buffer.from(head, 'latin1'), held.body, () => cache.release(held));
    } catch (err) {
      cache.release(held);
      throw err;
    }
    return;
  }
  const handle = await ctx.files.open(path);
  try {
    if (handle.readLoaned !== undefined && size >= ctx.loanMinBytes) await sendLoaned(ctx, out, handle, path, size, head);
    else await sendPooled(ctx, out, handle, path, size, head);
  } finally {
    // Every read has settled here (the chunk sender waits for reads still running
    // when it fails): RELEASE can go while the next request is served.
    closeInBackground(handle);
  }
}

async function sendPooled(ctx: ServerContext, out: SocketOutput, handle: SiteFileHandle, path: string, size: number, head: string): Promise<void> {
  const pool = ctx.pool;
  const stats = ctx.stats;
  const bufSize = pool.bufferSize;
  // Chunk 0 carries the head in front of the file bytes when it fits the reserve.
  const headInFront = head.length <= ctx.headReserve;
  const firstStart = headInFront ? ctx.headReserve : 0;
  const firstLen = Math.min(size, bufSize - firstStart);
  const count = 1 + Math.ceil((size - firstLen) / bufSize);
  const startRead = async (i: number): Promise<ReadyChunk> => {
    const pos = i === 0 ? 0 : firstLen + (i - 1) * bufSize;
    const len = i === 0 ? firstLen : Math.min(bufSize, size - pos);
    const dataStart = i === 0 ? firstStart : 0;
    const buf = pool.take();
    let n: number;
    try {
      n = await readFully(handle, buf, dataStart, len, pos);
    } catch (err) {
      pool.give(buf);
      throw err;
    }
    if (n !== len) {
      pool.give(buf);
      throw new FileChangedError(path);
    }
    let start = dataStart;
    if (i === 0 && headInFront) {
      start = dataStart - head.length;
      buf.write(head, start, 'latin1');
    }
    return { bytes: buf.subarray(start, dataStart + n), release: () => pool.give(buf) };
  };
  await sendChunksInOrder(out, count, ctx.maxChunksInFlight, startRead, (i, chunk, done) => {
    stats.pooledChunks++;
    if (i === 0 && !headInFront) out.write(Buffer.from(head, 'latin1'));
    return out.write(chunk.bytes, done);
  });
}

async function sendLoaned(ctx: ServerContext, out: SocketOutput, handle: SiteFileHandle, path: string, size: number, head: string): Promise<void> {
  const chunkBytes = ctx.pool.bufferSize;
  const stats = ctx.stats;
  const readLoaned = handle.readLoaned!.bind(handle);
  const count = Math.ceil(size / chunkBytes);
  const startRead = async (i: number): Promise<ReadyChunk> => {
    const pos = i * chunkBytes;
    const len = Math.min(chunkBytes, size - pos);
    const loan = await readLoaned(pos, len);
    if (loan.bytes.byteLength !== len) {
      loan.release();
      throw new FileChangedError(path);
    }
    return loan;
  };
  await sendChunksInOrder(out, count, ctx.maxChunksInFlight, startRead, (i, chunk, done) => {
    stats.loanedChunks++;
    if (i !== 0) return out.write(chunk.bytes, done);
    // The head, in a buffer from the same allocator as the body buffers (DMA memory
    // with the vsock driver), and the first loan in one gathered write: one packet.
    if (head.length > ctx.headPool.bufferSize) return out.writeGathered(Buffer.from(head, 'latin1'), chunk.bytes, done);
    const headPool = ctx.headPool;
    const hb = headPool.take();
    hb.write(head, 0, 'latin1');
    return out.writeGathered(hb.subarray(0, head.length), chunk.bytes, () => {
      headPool.give(hb);
      done();
    });
  });
}

/** Reads until `length` bytes are in or the file ends; returns the count. */
async function readFully(handle: SiteFileHandle, into: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await handle.read(into, offset + done, length - done, position + done);
    if (n <= 0) break;
    done += n;
  }
  return done;
}

function closeInBackground(handle: SiteFileHandle): void {
  handle.close().catch(() => {
    // A failed close loses nothing we still need.
  });
}
