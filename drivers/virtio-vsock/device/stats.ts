// Counters of the vsock device. Every packet the device refuses is counted under the
// reason it was refused for, and logged (rate-limited: the guest controls how often).

/** Reasons a guest packet (or chain) is dropped or answered with RST. */
export const DROP_REASONS = [
  'shortChain', // tx chain with fewer than 44 readable bytes: dropped
  'lengthMismatch', // header len larger than the payload the chain holds: RST
  'reservedCidBits', // upper 32 bits of src_cid or dst_cid set: dropped
  'wrongSrcCid', // src_cid is not the guest's CID: dropped
  'unknownDstCid', // dst_cid is neither the host (2) nor a running sibling of a shared group: RST
  'ownCid', // dst_cid is the guest's own CID: RST
  'badType', // type neither STREAM nor SEQPACKET, or not the connection's type: RST
  'seqpacketNotNegotiated', // SEQPACKET packet without VIRTIO_VSOCK_F_SEQPACKET (this guest's or the sibling's): RST
  'seqpacketToHost', // SEQPACKET REQUEST to the host: its ends are byte streams: RST
  'badFlags', // RW with flags on a stream, or flags other than EOM/EOR: RST
  'badOp', // op outside REQUEST..CREDIT_REQUEST: RST
  'badHeader', // len on a non-RW op, unknown SHUTDOWN flags: RST
  'unknownConnection', // packet (not REQUEST, not RST) for no connection: RST
  'refused', // REQUEST to a port nobody listens on: RST
  'tooManyConnections', // REQUEST beyond MAX_CONNECTIONS: RST
  'rstUnknownIgnored', // RST for no connection: dropped (never answer RST with RST)
  'lateAfterClose', // packet for a connection closed gracefully moments ago (late CREDIT_UPDATE, repeated SHUTDOWN): RST, counted, not logged
  'creditViolation', // RW beyond the buf_alloc we advertised: RST
  'protocolViolation', // op not allowed in the connection's state: RST
  'siblingQueueFull', // the sibling's queue of packets waiting for its rx buffers is full: RST both ends
  'siblingPendingLimit', // REQUEST beyond SIBLING_PENDING_REQUESTS_MAX unanswered ones to siblings: RST
  'rxBufferTooShort', // guest rx chain with fewer than 44 writable bytes: returned unused
  'strayRstOverflow', // too many RSTs waiting for rx buffers: RST dropped
  'queueError', // a chain refused by the virtqueue layer (bad descriptor etc.)
  'internalError', // an exception inside the device (a bug): logged, kick goes on
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export interface VsockDeviceStats {
  /** Packets taken from the tx queue (guest -> device), valid or not. */
  txPackets: number;
  /** Packets written into rx buffers (device -> guest). */
  rxPackets: number;
  /** Payload bytes guest -> host and host -> guest. */
  txBytes: number;
  rxBytes: number;
  rstSent: number;
  /** Packets and payload bytes this guest sent to sibling guests. */
  siblingPackets: number;
  siblingBytes: number;
  /** CREDIT_UPDATEs to siblings held back because the peer still saw half the window free (sibling-links.ts). */
  siblingCreditUpdatesHeld: number;
  rstReceived: number;
  creditUpdatesSent: number;
  creditRequestsSent: number;
  connectionsOpened: number;
  connectionsClosed: number;
  eventsSent: number;
  /** TRANSPORT_RESET events that found no event queue or no buffer. */
  eventsDropped: number;
  /** Host bytes written after the guest shut down its receive side (discarded). */
  hostBytesDiscarded: number;
  /** Guest payload bytes handed to host readers as views of guest memory (no copy) and copied out of it. */
  toHostViewBytes: number;
  toHostCopiedBytes: number;
  /** Host bytes for the guest by how they came: read into a reused buffer and copied out of it (into pool blocks, host-block-pool.ts, or a slice of Node's pool when few), or queued as the writer's own chunks (stream writes). */
  hostBytesCopied: number;
  hostBytesAsWritten: number;
  /** Tx chains still held when their packet had been handled (the reader finished its views later). */
  txChainsHeld: number;
  /** Host -> guest data stopped because the guest granted no credit (one per stall, with its CREDIT_REQUEST). */
  hostToGuestCreditStalls: number;
  /** Guest -> host data filled the window we advertise (buf_alloc): a slow host reader stops its guest sender. */
  guestToHostCreditStalls: number;
  /** Notifications from the driver (kicks) per queue: rx, tx, event. */
  kicks: QueueCounts;
  /** Interrupts sent to the driver per queue: rx, tx, event. */
  interrupts: QueueCounts;
  dropped: Record<DropReason, number>;
}

export interface QueueCounts {
  rx: number;
  tx: number;
  event: number;
}

export function makeStats(): VsockDeviceStats {
  const dropped = {} as Record<DropReason, number>;
  for (const r of DROP_REASONS) dropped[r] = 0;
  return {
    txPackets: 0,
    rxPackets: 0,
    txBytes: 0,
    rxBytes: 0,
    rstSent: 0,
    siblingPackets: 0,
    siblingBytes: 0,
    siblingCreditUpdatesHeld: 0,
    rstReceived: 0,
    creditUpdatesSent: 0,
    creditRequestsSent: 0,
    connectionsOpened: 0,
    connectionsClosed: 0,
    eventsSent: 0,
    eventsDropped: 0,
    hostBytesDiscarded: 0,
    toHostViewBytes: 0,
    toHostCopiedBytes: 0,
    hostBytesCopied: 0,
    hostBytesAsWritten: 0,
    txChainsHeld: 0,
    hostToGuestCreditStalls: 0,
    guestToHostCreditStalls: 0,
    kicks: { rx: 0, tx: 0, event: 0 },
    interrupts: { rx: 0, tx: 0, event: 0 },
    dropped,
  };
}

export type VsockLog = (message: string) => void;

/** Counts a drop and logs the first 10 of each reason, then every 1000th. */
export function countDrop(stats: VsockDeviceStats, log: VsockLog | undefined, reason: DropReason, detail: string): void {
  const n = ++stats.dropped[reason];
  if (log !== undefined && (n <= 10 || n % 1000 === 0)) log(`vsock: ${reason} (#${n}): ${detail}`);
}
