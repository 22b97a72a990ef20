// Guest tx chains kept out of the used ring while a host reader uses a view of their
// payload (zero copy to the host): the guest's buffer goes back only when the reader says
// it is done, so nobody copies the bytes on the way to a host socket.
//
// Holding a chain also holds a descriptor of the guest's tx ring, which every connection
// of the guest shares. So holding is budgeted: at most half the ring over the device, and
// at most a quarter per connection. Beyond that the payload is copied (counted), and the
// guest always keeps ring room for its other connections and its control packets.
//
// A reset of the ring (device reset, vhost-user stop) ends every hold at once: the chains
// of the old ring are gone, or, on a stop, returned to the guest with the ring's last used
// entries (stopHolding). Tickets name (ring generation, head); a release that comes later
// for an older generation does nothing.
import type { DescriptorChain, VirtqueueDevice } from '../../../kernel/virtqueue/device-queue.js';

/** A held chain, as the connection keeps it: generation * 2^16 + id (split heads and packed buffer ids are below 2^16). */
export type HoldTicket = number;
/** "Not held" (a piece that was copied instead). */
export const NO_TICKET = -1;

const GENERATION_FACTOR = 0x10000;

export class HeldTxChains {
  private queue: VirtqueueDevice | null = null;
  private generation = 0;
  private chains: (DescriptorChain | null)[] = [];
  /** Chains held now. */
  count = 0;
  /** Set per chain during one onTxChain call: the device must not push it. */
  private heldNow: DescriptorChain | null = null;

  /** Called when released chains wait to be published (the device flushes once per batch). */
  constructor(private readonly onReleased: () => void) {}

  /** The most chains held over the device: half the tx ring. */
  get limit(): number {
    return this.queue === null ? 0 : this.queue.size >>> 1;
  }

  /** The most chains one connection may hold: a quarter of the tx ring. */
  get perConnectionLimit(): number {
    return this.queue === null ? 0 : this.queue.size >>> 2;
  }

  /** A new tx ring: older tickets are void. */
  attach(queue: VirtqueueDevice): void {
    this.generation++;
    this.queue = queue;
    this.chains = new Array<DescriptorChain | null>(queue.size).fill(null);
    this.count = 0;
  }

  /**
   * The ring stops (vhost-user GET_VRING_BASE) or is reset. A stopping ring gets its held
   * chains back as used (`queue` given), so the guest has them when the ring runs again;
   * their readers still hold views, which the caller resets. Returns how many were held.
   */
  stopHolding(queue: VirtqueueDevice | null): number {
    const n = this.count;
    if (queue !== null && queue === this.queue) {
      for (const c of this.chains) if (c !== null) queue.push(c, 0);
      if (n > 0) queue.flush();
    }
    this.generation++;
    this.queue = null;
    this.chains = [];
    this.count = 0;
    return n;
  }

  /**
   * Holds `chain` (a tx chain being handled now) when the budget allows, and returns its
   * ticket; NO_TICKET when it does not (`connHeld`: chains the connection holds already).
   */
  hold(chain: DescriptorChain, connHeld: number): HoldTicket {
    if (this.queue === null || this.count >= this.limit || connHeld >= this.perConnectionLimit) return NO_TICKET;
    const id = chain.head;
    if (id >= this.chains.length || this.chains[id] !== null) return NO_TICKET;
    this.chains[id] = chain;
    this.count++;
    this.heldNow = chain;
    return this.generation * GENERATION_FACTOR + id;
  }

  /** True (once) when the chain just handled was held: the device must not push it now. */
  takeHeld(chain: DescriptorChain): boolean {
    if (this.heldNow !== chain) return false;
    this.heldNow = null;
    return true;
  }

  /** The reader is done with a held chain's payload: the chain goes back to the guest. */
  release(ticket: HoldTicket): void {
    if (ticket < 0) return;
    const gen = Math.floor(ticket / GENERATION_FACTOR);
    const id = ticket - gen * GENERATION_FACTOR;
    const q = this.queue;
    if (gen !== this.generation || q === null) return; // the ring was reset or stopped meanwhile
    const c = this.chains[id];
    if (c === null || c === undefined) return;
    this.chains[id] = null;
    this.count--;
    if (this.heldNow === c) {
      // Released while its packet is still being handled (a reader done at once): the
      // device pushes it with the others.
      this.heldNow = null;
      return;
    }
    q.push(c, 0); // tx buffers are device-readable only (5.10.6.2)
    this.onReleased();
  }
}

/** A payload spread over more descriptors than this is copied, not handed as views. */
export const MAX_VIEWS_PER_PAYLOAD = 64;

/**
 * How many descriptors hold the chain's device-readable bytes [from, from + len): 0 when
 * more than MAX_VIEWS_PER_PAYLOAD (or fewer bytes than that are readable).
 */
export function readableSegmentCount(chain: DescriptorChain, from: number, len: number): number {
  let skip = from;
  let left = len;
  let n = 0;
  for (let i = 0; i < chain.readableCount && left > 0; i++) {
    const segLen = chain.lengths[i]!;
    if (skip >= segLen) {
      skip -= segLen;
      continue;
    }
    if (++n > MAX_VIEWS_PER_PAYLOAD) return 0;
    left -= Math.min(segLen - skip, left);
    skip = 0;
  }
  return left === 0 ? n : 0;
}

/**
 * Hands the readable bytes [from, from + len) to `reader` as views, one per descriptor,
 * each recorded in `handed`; the last piece carries `ticket`, so the chain goes back when
 * the reader finishes it (pieces are finished in order).
 */
export function handReadableViews(chain: DescriptorChain, from: number, len: number, ticket: HoldTicket, handed: HandedPieces, reader: (view: Buffer, done: () => void) => void, done: () => void): void {
  let skip = from;
  let left = len;
  for (let i = 0; i < chain.readableCount && left > 0; i++) {
    const segLen = chain.lengths[i]!;
    if (skip >= segLen) {
      skip -= segLen;
      continue;
    }
    const n = Math.min(segLen - skip, left);
    const bytes = chain.regions[i]!.bytes;
    const view = Buffer.from(bytes.buffer, bytes.byteOffset + chain.offsets[i]! + skip, n);
    left -= n;
    skip = 0;
    handed.push(left === 0 ? ticket : NO_TICKET, n);
    reader(view, done);
  }
}

/**
 * The pieces a connection handed to its host reader and the reader has not finished, in
 * order: each one's hold ticket (NO_TICKET for a copied piece) and length. A ring that
 * grows; no allocation per packet once grown.
 */
export class HandedPieces {
  private tickets = new Float64Array(16);
  private lens = new Uint32Array(16);
  private head = 0;
  /** Pieces handed and not finished. */
  size = 0;
  /** Of those, how many hold a guest chain. */
  holding = 0;
  /** Bytes of those pieces. */
  bytes = 0;
  /** The length of the piece the last shift() took. */
  lastLength = 0;

  push(ticket: HoldTicket, len: number): void {
    if (this.size === this.tickets.length) this.grow();
    const i = (this.head + this.size) & (this.tickets.length - 1);
    this.tickets[i] = ticket;
    this.lens[i] = len;
    this.size++;
    this.bytes += len;
    if (ticket !== NO_TICKET) this.holding++;
  }

  /** Takes the oldest piece (size > 0): returns its ticket; its length is in lastLength. */
  shift(): HoldTicket {
    const i = this.head;
    const ticket = this.tickets[i]!;
    this.lastLength = this.lens[i]!;
    this.head = (i + 1) & (this.tickets.length - 1);
    this.size--;
    this.bytes -= this.lastLength;
    if (ticket !== NO_TICKET) this.holding--;
    return ticket;
  }

  private grow(): void {
    const n = this.tickets.length;
    const t = new Float64Array(n * 2);
    const l = new Uint32Array(n * 2);
    for (let k = 0; k < this.size; k++) {
      t[k] = this.tickets[(this.head + k) & (n - 1)]!;
      l[k] = this.lens[(this.head + k) & (n - 1)]!;
    }
    this.tickets = t;
    this.lens = l;
    this.head = 0;
  }
}
