// The virtio-fs driver's public API.
export { VirtioFsDriver, type VirtioFsDriverOptions, type VirtioFsDriverStats, type DmaFile, type ReaddirOptions } from './virtio-fs-driver.js';
export { VirtioFsFileHandle } from './file-handle.js';
export { FsError, VirtioFsError, type VirtioFsErrorCode } from './errors.js';
export { FsStats, FsDirent, type FsStatFs } from './stats.js';
export { FuseCodecError } from '../fuse-codec.js';
