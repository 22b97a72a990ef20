// Public exports of the virtio-vsock driver side.
export { VsockDriver, type VsockDriverOptions, type ConnectOptions } from './driver/driver.js';
export { VsockSocket, type VsockSocketOptions } from './driver/socket.js';
export { VsockServer } from './driver/server.js';
export { VsockSeqpacketSocket, type SocketType } from './driver/seqpacket-socket.js';
export { RawVsockConnection, type RawConnectionHandlers, type RawConnectionOptions, type RawWriteCallback } from './driver/raw-connection.js';
export { RawVsockListener } from './driver/raw-listener.js';
export { VsockError, type VsockErrorCode } from './driver/errors.js';
export type { TxMode } from './driver/connection.js';
export type { VsockDriverStats } from './driver/stats.js';
