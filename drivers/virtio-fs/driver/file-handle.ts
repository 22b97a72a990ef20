// An open file on the virtio-fs driver, shaped like node:fs/promises FileHandle.
import type { CachedInode } from './inode-cache.js';
import { FsError } from './errors.js';
import type { FsStats } from './stats.js';
import { errnoOf } from '../errno.js';

/** What a handle needs from its driver (the driver implements it). */
export interface FileHandleOwner {
  readAt(handle: VirtioFsFileHandle, target: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  statHandle(handle: VirtioFsFileHandle): Promise<FsStats>;
  releaseHandle(handle: VirtioFsFileHandle): Promise<void>;
}

export class VirtioFsFileHandle {
  /** Position for reads with position null/undefined. */
  private position = 0;
  private closing: Promise<void> | null = null;

  constructor(
    private readonly owner: FileHandleOwner,
    /** The FUSE file handle (fuse_open_out.fh). */
    readonly fh: number,
    /** The cache entry, pinned while the handle is open (no FORGET for an open file). */
    readonly inode: CachedInode,
    readonly path: string,
  ) {}

  get nodeid(): number {
    return this.inode.nodeid;
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  /**
   * Reads up to `length` bytes (one FUSE READ, at most the driver's maximum read size)
   * into buffer[offset...], from `position` (or the handle's position, which then
   * advances). Zero copy when `buffer` lies in the transport's DMA memory; otherwise
   * one copy from a DMA pool chunk. bytesRead 0 means end of file.
   */
  async read<T extends Uint8Array>(buffer: T, offset = 0, length = buffer.byteLength - offset, position: number | null = null): Promise<{ bytesRead: number; buffer: T }> {
    if (this.closing) throw new FsError(errnoOf('EBADF')!, 'read', this.path);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > buffer.byteLength) {
      throw new RangeError(`read: offset ${offset} and length ${length} do not fit a buffer of ${buffer.byteLength} bytes`);
    }
    const usePos = position === null || position === undefined || position < 0;
    const at = usePos ? this.position : position;
    const bytesRead = await this.owner.readAt(this, buffer, offset, length, at);
    if (usePos) this.position = at + bytesRead;
    return { bytesRead, buffer };
  }

  stat(): Promise<FsStats> {
    if (this.closing) return Promise.reject(new FsError(errnoOf('EBADF')!, 'fstat', this.path));
    return this.owner.statHandle(this);
  }

  /** Sends RELEASE; later calls return the same promise. */
  close(): Promise<void> {
    if (this.closing === null) this.closing = this.owner.releaseHandle(this);
    return this.closing;
  }
}
