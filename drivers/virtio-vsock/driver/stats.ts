// Driver counters: what ran, how often, how many bytes were copied. Tests read them
// to prove which transmit path ran and that memory stayed bounded.

export interface VsockDriverStats {
  /** Data packets (RW) sent, and their payload bytes. */
  txPackets: number;
  txBytes: number;
  /** Control packets sent (REQUEST, RESPONSE, SHUTDOWN, RST, CREDIT_*). */
  txControlPackets: number;
  /** Payload bytes that went out by descriptor pointing at the user's buffer. */
  txZeroCopyBytes: number;
  txZeroCopyPackets: number;
  /** memcpy operations on transmit and the bytes they moved (two-copy counts both). */
  txCopies: number;
  txCopiedBytes: number;
  /** Intermediate packet objects made (two-copy mode only). */
  txPacketObjects: number;
  /** Writes in 'zero-copy' mode whose buffer was not DMA memory (sent with one copy). */
  txZeroCopyMisses: number;
  /** Times a connection had data and no credit; times tx slots or descriptors ran out. */
  txCreditStalls: number;
  txRingStalls: number;
  rxPackets: number;
  rxBytes: number;
  /** Received packets dropped (malformed, wrong CID, for closed connections). */
  rxDropped: number;
  /** Packets that exceeded the credit we gave (the connection is reset). */
  rxCreditOverruns: number;
  creditUpdatesSent: number;
  creditUpdatesReceived: number;
  creditRequestsReceived: number;
  rstSent: number;
  rstReceived: number;
  transportResets: number;
  kicks: number;
  interrupts: number;
  /** Connections now in the table, and the most at once. */
  connections: number;
  maxConnections: number;
  /** Largest number of received bytes held unread by one socket. */
  maxRxUnconsumed: number;
}

export function newStats(): VsockDriverStats {
  return {
    txPackets: 0,
    txBytes: 0,
    txControlPackets: 0,
    txZeroCopyBytes: 0,
    txZeroCopyPackets: 0,
    txCopies: 0,
    txCopiedBytes: 0,
    txPacketObjects: 0,
    txZeroCopyMisses: 0,
    txCreditStalls: 0,
    txRingStalls: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxDropped: 0,
    rxCreditOverruns: 0,
    creditUpdatesSent: 0,
    creditUpdatesReceived: 0,
    creditRequestsReceived: 0,
    rstSent: 0,
    rstReceived: 0,
    transportResets: 0,
    kicks: 0,
    interrupts: 0,
    connections: 0,
    maxConnections: 0,
    maxRxUnconsumed: 0,
  };
}
