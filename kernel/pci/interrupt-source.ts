// What a PCI transport needs from an interrupt mechanism (uio INTx, busy polling...).
// For each interrupt the source calls `acknowledge` (the transport reads its ISR, which
// also lowers the INTx line; false = not ours on a shared line), then re-arms the line,
// then calls `dispatch` (the driver's handler) when the interrupt was ours. A source
// that polls for a while after an interrupt reads `progress` (a number that changes
// whenever the device returns buffers) to tell when the device has gone quiet.
export interface InterruptSource {
  /** What it is, for logs ("uio0 INTx", "busy poll"). */
  readonly description: string;
  start(acknowledge: () => boolean, dispatch: () => void, progress?: () => number): void;
  /** Stops for good. Idempotent. */
  stop(): void;
}

/** What a transport hands its interrupt source: acknowledge, dispatch, and its used->idx progress. */
export interface InterruptTarget {
  acknowledgeInterrupt(): boolean;
  dispatchInterrupt(): void;
  usedProgress(): number;
}

/** Starts `source` (if any) on `target`'s acknowledge, dispatch and progress. */
export function startInterrupts(source: InterruptSource | null, target: InterruptTarget): void {
  source?.start(
    () => target.acknowledgeInterrupt(),
    () => target.dispatchInterrupt(),
    () => target.usedProgress(),
  );
}
