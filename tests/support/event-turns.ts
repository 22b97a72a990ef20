// Waiting on the event loop for in-process tests (device and driver in one thread):
// counted in turns (setImmediate), never timed, so a slow machine only takes longer.

/** Resolves once cond() holds, looking again after every event-loop turn; throws after maxTurns. */
export async function until(cond: () => boolean, what: string, maxTurns = 200_000): Promise<void> {
  for (let i = 0; i < maxTurns; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`condition never held: ${what}`);
}

/** Lets `n` event-loop turns pass. */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}
