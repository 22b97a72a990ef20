// The signals that stop a command that runs a guest (tsvirtio start, tsvirtio run):
// SIGINT (a terminal's Ctrl-C), SIGTERM and SIGHUP. QEMU and virtiofsd run in their
// own process groups, so these reach only this process, which stops them in order.

export const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface StopSignals {
  /** The first stop signal received, or null. */
  readonly signal: NodeJS.Signals | null;
  /** Resolves with the first stop signal. */
  readonly received: Promise<NodeJS.Signals>;
  /** Stops listening (the default handlers apply again). */
  dispose(): void;
}

export function watchStopSignals(): StopSignals {
  let signal: NodeJS.Signals | null = null;
  let wake: (s: NodeJS.Signals) => void = () => {};
  const received = new Promise<NodeJS.Signals>((r) => {
    wake = r;
  });
  const on = (sig: NodeJS.Signals): void => {
    if (signal !== null) return;
    signal = sig;
    wake(sig);
  };
  for (const s of STOP_SIGNALS) process.on(s, on);
  return {
    get signal() {
      return signal;
    },
    received,
    dispose: () => {
      for (const s of STOP_SIGNALS) process.off(s, on);
    },
  };
}

/** A shell's status for a command ended by `signal` (128 + its number: SIGINT 130). */
export function signalStatus(signal: NodeJS.Signals): number {
  return 128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as Partial<Record<NodeJS.Signals, number>>)[signal]!;
}
