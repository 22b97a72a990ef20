// Public exports of the virtio-vsock driver side.
export { VsockDriver, type VsockDriverOptions, type ConnectOptions } from './driver/driver.js';
export { VsockSocket, type VsockSocketOptions } from './driver/socket.js';
export { VsockServer } from './driver/server.js';
export { VsockError, type VsockErrorCode } from './driver/errors.js';
export type { TxMode } from './driver/connection.js';
export type { VsockDriverStats } from './driver/stats.js';
