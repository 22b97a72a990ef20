// The virtio file system device's identity, configuration layout and queues
// (virtio 1.2, 5.11), shared by the driver and the device.
//
//   struct virtio_fs_config {          (5.11.4)
//     u8 tag[36];                      UTF-8, NUL-padded, not NUL-terminated when 36 long
//     le32 num_request_queues;         at least 1
//     le32 notify_buf_size;            only with VIRTIO_FS_F_NOTIFICATION
//   };
//
// Queues (5.11.2): 0 hiprio (FORGET and INTERRUPT), [1 notification queue when
// VIRTIO_FS_F_NOTIFICATION is negotiated], then the request queues. We never negotiate
// notifications, so the first request queue is 1.
import { FuseCodecError } from './fuse-codec.js';

export const VIRTIO_ID_FS = 26;
export const VIRTIO_FS_TAG_SIZE = 36;
export const VIRTIO_FS_CONFIG_SIZE = 40; // tag + num_request_queues
export const VIRTIO_FS_F_NOTIFICATION = 0n;

export const VIRTIO_FS_HIPRIO_QUEUE = 0;
export const VIRTIO_FS_REQUEST_QUEUE = 1;

export interface VirtioFsConfig {
  tag: string;
  numRequestQueues: number;
}

export function encodeVirtioFsConfig(cfg: VirtioFsConfig): Uint8Array {
  const out = new Uint8Array(VIRTIO_FS_CONFIG_SIZE);
  const tag = new TextEncoder().encode(cfg.tag);
  if (tag.length === 0 || tag.length > VIRTIO_FS_TAG_SIZE) throw new RangeError(`virtio-fs tag must be 1..36 bytes of UTF-8, got ${tag.length}`);
  out.set(tag, 0);
  new DataView(out.buffer).setUint32(VIRTIO_FS_TAG_SIZE, cfg.numRequestQueues, true);
  return out;
}

export function decodeVirtioFsConfig(bytes: Uint8Array): VirtioFsConfig {
  if (bytes.length < VIRTIO_FS_CONFIG_SIZE) {
    throw new FuseCodecError('ERR_FUSE_SHORT', `virtio_fs_config needs ${VIRTIO_FS_CONFIG_SIZE} bytes, got ${bytes.length}`);
  }
  let end = bytes.indexOf(0);
  if (end < 0 || end > VIRTIO_FS_TAG_SIZE) end = VIRTIO_FS_TAG_SIZE;
  const tag = new TextDecoder('utf-8', { fatal: false }).decode(bytes.subarray(0, end));
  const numRequestQueues = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(VIRTIO_FS_TAG_SIZE, true);
  return { tag, numRequestQueues };
}
