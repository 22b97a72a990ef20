// What a PCI transport needs from an interrupt mechanism (uio INTx, busy polling...).
// For each interrupt the source calls `acknowledge` (the transport reads its ISR, which
// also lowers the INTx line; false = not ours on a shared line), then re-arms the line,
// then calls `dispatch` (the driver's handler) when the interrupt was ours.
export interface InterruptSource {
  /** What it is, for logs ("uio0 INTx", "busy poll"). */
  readonly description: string;
  start(acknowledge: () => boolean, dispatch: () => void): void;
  /** Stops for good. Idempotent. */
  stop(): void;
}
