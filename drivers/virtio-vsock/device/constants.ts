// Tunables of the vsock device emulator, named with their units.

/**
 * Receive buffer we advertise per connection (buf_alloc, virtio 1.2 5.10.6.3). It is
 * also the bound on guest bytes we hold for a slow host reader: the guest may not send
 * more than buf_alloc - (rx_cnt - fwd_cnt), and fwd_cnt only moves when the host side
 * takes bytes, so an idle reader stops the guest instead of growing our memory.
 */
export const CONN_BUF_ALLOC_BYTES = 256 * 1024;

/**
 * Send CREDIT_UPDATE once this many bytes were consumed on the host side without the
 * guest having been told (Linux: VIRTIO_VSOCK_MAX_PKT_BUF_SIZE, Firecracker:
 * CONN_CREDIT_UPDATE_THRESHOLD).
 */
export const CONN_CREDIT_UPDATE_THRESHOLD_BYTES = 64 * 1024;

/** Largest payload we put in one packet to the guest (Linux splits at 64 KiB too). */
export const MAX_PKT_PAYLOAD_BYTES = 64 * 1024;

/**
 * Host-to-guest bytes a connection accepts from its host writer before the write
 * callback is held back (stream backpressure). With the socket's highWaterMark this
 * bounds what a host writer can pile up while the guest grants no credit.
 */
export const HOST_TO_GUEST_QUEUE_LIMIT_BYTES = 256 * 1024;

/**
 * Host-to-guest bytes queued over all connections of one VM before its host writers are
 * held back too, oldest held first (see HOST_TO_GUEST_QUEUE_LIMIT_BYTES for one
 * connection). It bounds what one VM's host side holds whatever its connection count,
 * and it is what stops the daemon from reading a flooding VM's host sockets faster than
 * its guest takes the bytes: reads wait until the queue drains.
 */
export const HOST_TO_GUEST_VM_LIMIT_BYTES = 4 * 1024 * 1024;

/**
 * Room a host reader let go when its VM's queue drained is promised until the next
 * event-loop turn: one read of the daemon's host read buffer (host/splice.ts). Released
 * readers only read in the next poll phase, so without the promise every held reader went
 * at once (a flooding VM's 100), and one poll phase took 100 reads of 64 KiB each, several
 * ms during which no other VM's event ran.
 */
export const HOST_READ_PROMISE_BYTES = 64 * 1024;

/**
 * Work one VM's device does in one event-loop turn before it yields (setImmediate): tx
 * chains taken and their bytes, rx packets written and their bytes. An event of another
 * VM on the same event loop (a kick, a ping-pong byte) waits behind whatever the loop
 * does in that turn: a VM that floods gets this much per turn, then the others' events
 * run. (vhost-device-vsock gives each VM a thread instead; `npm run bench -- scale`
 * measures the quiet VM's round trip with one VM flooding.)
 */
export interface TurnShare {
  txChains: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

/** A device alone on its event loop (in-process, the daemon with one VM per loop): large turns, fewer of them. */
export const TURN_SHARE_ALONE: Readonly<TurnShare> = Object.freeze({ txChains: 256, txBytes: 256 * 1024, rxPackets: 256, rxBytes: 256 * 1024 });

/**
 * A device that shares its event loop with other VMs' devices (the daemon with several
 * VMs on a loop). Against 256 KiB, a quiet VM's ping p99 with one VM flooding fell from
 * 1.0-2.4 ms to 0.55-1.1 ms (npm run bench -- scale, 4 interleaved runs, daemon at nice
 * -10) for 5-20% less flood throughput; 32 KiB was no better and cost more throughput.
 * Alone on a loop, 64 KiB turns cost a device 35-45% of its in-process zero-copy
 * throughput (bench level1), hence two shares.
 */
export const TURN_SHARE_SHARED: Readonly<TurnShare> = Object.freeze({ txChains: 64, txBytes: 64 * 1024, rxPackets: 64, rxBytes: 64 * 1024 });

/**
 * Guest payloads up to this size are copied into a shared staging buffer instead of a
 * chunk of their own, so a slow reader facing many tiny packets holds bytes, not
 * per-packet objects (its window of 256 KiB could otherwise be 256 Ki one-byte chunks).
 */
export const SMALL_PAYLOAD_MAX_BYTES = 1024;
export const STAGING_BUFFER_BYTES = 16 * 1024;

/**
 * Connections per device (any state). A guest REQUEST beyond it gets RST
 * (tooManyConnections): each connection costs host memory the guest does not pay for.
 */
export const MAX_CONNECTIONS = 4096;

/** highWaterMark of VsockHostSocket in both directions. */
export const HOST_SOCKET_HIGH_WATER_MARK_BYTES = 64 * 1024;

/** RST packets not tied to a live connection waiting for a guest rx buffer. */
export const STRAY_RST_QUEUE_ENTRIES = 1024;

/** Local (host) ports of host-initiated connections: [2^30, 2^31), as Firecracker. */
export const EPHEMERAL_PORT_FIRST = 1 << 30;
export const EPHEMERAL_PORT_COUNT = 1 << 30;

/** Default timeout of device.host.connect(). */
export const CONNECT_TIMEOUT_MS_DEFAULT = 10_000;

/** Largest split-ring size the device offers. */
export const VSOCK_MAX_QUEUE_SIZE = 256;

/**
 * Bytes of packets from sibling guests that may wait for one guest's rx buffers (the
 * SiblingQueue's ring, allocated when the first sibling packet comes). The guests'
 * credit keeps honest traffic well below it; a sender that fills it (its peer stopped
 * taking rx buffers, or it ignores credit) gets RST on that connection (siblingQueueFull).
 */
export const SIBLING_QUEUE_BYTES = 2 * 1024 * 1024;

/**
 * REQUESTs a guest may have outstanding towards siblings (no RESPONSE or RST yet). A
 * REQUEST beyond it gets RST (siblingPendingLimit): a flood towards a guest that never
 * answers costs the daemon a bounded table.
 */
export const SIBLING_PENDING_REQUESTS_MAX = 256;
