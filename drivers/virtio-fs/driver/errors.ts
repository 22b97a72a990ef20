// Errors the virtio-fs driver raises.
//  - FsError: what the file system said (a FUSE reply's errno), shaped like Node's
//    fs errors: code 'ENOENT', errno -2 (negative, as libuv reports it), syscall, path.
//  - VirtioFsError: the driver or device misbehaved (stable ERR_VIRTIO_FS_* codes).
//  - FuseCodecError (fuse-codec.ts): one reply broke the protocol; names opcode and unique.
import { errnoDescription, errnoName } from '../errno.js';

export class FsError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
  readonly path: string | undefined;

  constructor(errno: number, syscall: string, path?: string) {
    const code = errnoName(errno);
    super(`${code}: ${errnoDescription(errno)}, ${syscall}${path !== undefined ? ` '${path}'` : ''}`);
    this.name = 'Error';
    this.code = code;
    this.errno = -errno;
    this.syscall = syscall;
    this.path = path;
  }
}

export type VirtioFsErrorCode =
  | 'ERR_VIRTIO_FS_DEVICE_ID' // the transport's device is not a file system device (26)
  | 'ERR_VIRTIO_FS_FEATURES' // VIRTIO_F_VERSION_1 not offered
  | 'ERR_VIRTIO_FS_CONFIG' // no request queue in the configuration
  | 'ERR_VIRTIO_FS_INIT' // FUSE_INIT failed or offered a version we cannot speak
  | 'ERR_VIRTIO_FS_QUEUE_BROKEN' // the device broke the ring protocol: the queue is dead
  | 'ERR_VIRTIO_FS_CLOSED'; // the driver was closed

export class VirtioFsError extends Error {
  constructor(
    readonly code: VirtioFsErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'VirtioFsError';
  }
}
