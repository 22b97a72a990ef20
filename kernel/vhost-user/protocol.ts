// vhost-user protocol constants (QEMU docs/interop/vhost-user.rst).
//
// A message is a 12-byte header (request u32, flags u32, size u32, all in host byte
// order: "Message Specification") followed by `size` bytes of payload. File
// descriptors travel as SCM_RIGHTS ancillary data with the message.

/** Header bytes: request, flags, size (vhost-user.rst "Header"). */
export const HEADER_SIZE = 12;

/** flags bits 0-1: the protocol version, currently 1. */
export const VERSION = 0x1;
export const VERSION_MASK = 0x3;
/** flags bit 2: set on every reply from the back-end. */
export const FLAG_REPLY = 0x4;
/** flags bit 3: the front-end wants an ack (vhost-user.rst "REPLY_ACK"). */
export const FLAG_NEED_REPLY = 0x8;
export const KNOWN_FLAGS = VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY;

/** Front-end request ids ("Front-end message types"). */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_SLAVE_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export type RequestName = keyof typeof Request;
export type RequestId = (typeof Request)[RequestName];

const NAMES = new Map<number, RequestName>(Object.entries(Request).map(([k, v]) => [v, k as RequestName]));

/** "SET_MEM_TABLE (5)", or "unknown request 99". */
export function requestName(id: number): string {
  const n = NAMES.get(id);
  return n === undefined ? `unknown request ${id}` : `${n} (${id})`;
}

export function isKnownRequest(id: number): boolean {
  return NAMES.has(id);
}

/** Virtio feature bit 30, reused by vhost-user to announce protocol features ("Communication"). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30n;
/** Dirty logging for migration; never offered by this back-end. */
export const VHOST_F_LOG_ALL = 26n;

/** Protocol feature bits ("Protocol features"). */
export const ProtocolFeature = {
  MQ: 0n,
  LOG_SHMFD: 1n,
  RARP: 2n,
  REPLY_ACK: 3n,
  MTU: 4n,
  SLAVE_REQ: 5n,
  CROSS_ENDIAN: 6n,
  CRYPTO_SESSION: 7n,
  PAGEFAULT: 8n,
  CONFIG: 9n,
  SLAVE_SEND_FD: 10n,
  HOST_NOTIFIER: 11n,
  INFLIGHT_SHMFD: 12n,
  RESET_DEVICE: 13n,
  INBAND_NOTIFICATIONS: 14n,
  CONFIGURE_MEM_SLOTS: 15n,
  STATUS: 16n,
} as const;

/** Regions in one SET_MEM_TABLE (QEMU's VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_REGIONS = 8;
/** Most fds one message may carry (SET_MEM_TABLE: one per region). */
export const MAX_FDS_PER_MESSAGE = MAX_MEM_REGIONS;
/** Largest device config space exchanged (QEMU's VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
/** Config payload header: offset, size, flags (u32 each). */
export const CONFIG_HEADER_SIZE = 12;

/** SET_VRING_KICK/CALL/ERR u64 payload: bits 0-7 ring index, bit 8 "no fd". */
export const VRING_INDEX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** SET_VRING_ADDR flags bit 0: log used-ring writes (migration only). */
export const VHOST_VRING_F_LOG = 0x1;

/** Payload sizes. */
export const U64_SIZE = 8;
export const VRING_STATE_SIZE = 8; // index u32, num u32
export const VRING_ADDR_SIZE = 40; // index u32, flags u32, desc u64, used u64, avail u64, log u64
export const MEM_REGION_SIZE = 32; // guest_phys_addr, memory_size, userspace_addr, mmap_offset (u64 each)
export const MEM_TABLE_HEADER_SIZE = 8; // nregions u32, padding u32
export const SINGLE_MEM_REGION_SIZE = 8 + MEM_REGION_SIZE; // padding u64 + region
export const LOG_SIZE = 16; // mmap_size u64, mmap_offset u64
export const INFLIGHT_SIZE = 20; // mmap_size u64, mmap_offset u64, num_queues u16, queue_size u16
