// Per-connection pending work towards the guest, as a small bitset (the idea of
// Firecracker's PendingRxSet). The order of the constants is the order in which
// work leaves: REQUEST/RESPONSE open the connection before anything else may be sent
// (nothing goes to the guest on a connection before its RESPONSE), data goes before
// the SHUTDOWN that follows it, credit packets last (every packet carries credit
// anyway). RSTs do not need a bit: a reset connection is forgotten at once and its RST
// waits in the muxer's queue of RSTs.

export const PENDING_REQUEST = 1 << 1;
export const PENDING_RESPONSE = 1 << 2;
export const PENDING_RW = 1 << 3;
export const PENDING_SHUTDOWN = 1 << 4;
export const PENDING_CREDIT_UPDATE = 1 << 5;
export const PENDING_CREDIT_REQUEST = 1 << 6;

export class PendingRxSet {
  bits = 0;

  insert(bit: number): void {
    this.bits |= bit;
  }

  remove(bit: number): void {
    this.bits &= ~bit;
  }

  has(bit: number): boolean {
    return (this.bits & bit) !== 0;
  }

  get isEmpty(): boolean {
    return this.bits === 0;
  }

  clear(): void {
    this.bits = 0;
  }
}
