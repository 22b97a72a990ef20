// Connections between two sibling guests of one daemon, as the device sees them. The
// guests run the protocol end to end (credit, SHUTDOWN, RST are theirs, packets are
// copied from one guest's tx queue to the other's rx queue); the device keeps one
// record per connection so that it can
//  - refuse packets for connections that were never opened (RST, as for the host),
//  - check credit: a guest may send at most the peer's buf_alloc - (tx_cnt - fwd_cnt),
//  - bound the REQUESTs a guest leaves unanswered, and
//  - reset both ends when one guest goes away (its peer gets RST, not silence), and
//  - hold back credit updates the peer does not need yet (below).
//
// Credit updates: a Linux receiver sends CREDIT_UPDATE whenever a read empties its
// queue (virtio_transport_stream_do_dequeue, the low_rx_bytes test, Linux 6.1), which
// for a stream read as it comes is one or two per packet. Each costs the sender an rx
// interrupt, a packet to handle and a refilled buffer: at 4 KiB packets, guest to guest
// measured 420 updates and 219 rx interrupts per MB at the sender against 15 guest to
// host. Credit is cumulative (5.10.6.3: buf_alloc and fwd_cnt are the receiver's
// current figures), so a newer update makes an older one redundant. The device passes
// an update at once while the sender, as last told, has less than half of the window
// free, or when the sender asked for it (CREDIT_REQUEST); otherwise it holds the newest
// one. A held update goes the moment the sender's own sends take its view of the window
// below half, and any later packet of the same side (which carries newer credit fields)
// replaces it. So the sender never waits for credit the device holds: it always has
// half a window to send while the update travels.
//
// Both muxers hold the same SiblingLink, each keyed from its own guest's side:
// (peer cid, own port, peer port).

/** The side that sent REQUEST waits for the RESPONSE. */
export const LINK_REQUESTED = 0;
export const LINK_ESTABLISHED = 1;

export interface LinkSide<M> {
  muxer: M;
  cid: number;
  port: number;
  /** Payload bytes this side sent (u32 wrap-around). */
  txCnt: number;
  /** Largest buf_alloc this side advertised (a shrink is not held against the peer). */
  bufAlloc: number;
  /** Bytes this side consumed, as it last said. */
  fwdCnt: number;
  /** buf_alloc and fwd_cnt of this side as the peer was last told (its newest packet passed on). */
  toldBufAlloc: number;
  toldFwdCnt: number;
  /** The header of a CREDIT_UPDATE of this side held back (valid while `holding`; allocated on first hold). */
  heldUpdate: Buffer | null;
  holding: boolean;
  /** The peer sent CREDIT_REQUEST: this side's next packet goes at once. */
  updateOwed: boolean;
}

function newSide<M>(muxer: M, cid: number, port: number): LinkSide<M> {
  return { muxer, cid, port, txCnt: 0, bufAlloc: 0, fwdCnt: 0, toldBufAlloc: 0, toldFwdCnt: 0, heldUpdate: null, holding: false, updateOwed: false };
}

export class SiblingLink<M> {
  state = LINK_REQUESTED;
  readonly a: LinkSide<M>;
  readonly b: LinkSide<M>;

  /** a: the side that sent REQUEST. */
  constructor(
    readonly type: number,
    aMuxer: M,
    aCid: number,
    aPort: number,
    bMuxer: M,
    bCid: number,
    bPort: number,
  ) {
    this.a = newSide(aMuxer, aCid, aPort);
    this.b = newSide(bMuxer, bCid, bPort);
  }

  /** The side whose guest has CID `cid`, and the other. */
  side(cid: number): LinkSide<M> {
    return cid === this.a.cid ? this.a : this.b;
  }

  other(cid: number): LinkSide<M> {
    return cid === this.a.cid ? this.b : this.a;
  }

  /** Notes the credit fields of a packet `from` sent. */
  noteCredit(from: LinkSide<M>, bufAlloc: number, fwdCnt: number): void {
    if (bufAlloc > from.bufAlloc) from.bufAlloc = bufAlloc;
    from.fwdCnt = fwdCnt;
  }

  /** Notes that a packet of `from` with these credit fields was passed to the other side. */
  told(from: LinkSide<M>, bufAlloc: number, fwdCnt: number): void {
    from.toldBufAlloc = bufAlloc;
    from.toldFwdCnt = fwdCnt;
    from.holding = false;
    from.updateOwed = false;
  }

  /**
   * Free bytes of `side`'s window as its peer `peer` was last told: what the peer may
   * still send before it needs an update.
   */
  windowSeenByPeer(side: LinkSide<M>, peer: LinkSide<M>): number {
    return side.toldBufAlloc - ((peer.txCnt - side.toldFwdCnt) >>> 0);
  }

  /**
   * True when a CREDIT_UPDATE from `from` (with this buf_alloc) may be held back: the
   * connection is open, its window is unchanged, nobody asked for it, and the peer `to`
   * still sees at least half of the window free.
   */
  updateCanWait(from: LinkSide<M>, to: LinkSide<M>, bufAlloc: number): boolean {
    if (this.state !== LINK_ESTABLISHED || from.updateOwed || bufAlloc !== from.toldBufAlloc || bufAlloc === 0) return false;
    return this.windowSeenByPeer(from, to) * 2 >= from.toldBufAlloc;
  }

  /** Keeps `header` (a CREDIT_UPDATE of `from`, 44 bytes) as the update held back. */
  hold(from: LinkSide<M>, header: Buffer): void {
    from.heldUpdate ??= Buffer.alloc(header.length);
    header.copy(from.heldUpdate);
    from.holding = true;
  }

  /** True when `side` holds an update that its peer `peer` now needs (less than half the window seen free). */
  heldUpdateDue(side: LinkSide<M>, peer: LinkSide<M>): boolean {
    return side.holding && this.windowSeenByPeer(side, peer) * 2 < side.toldBufAlloc;
  }

  /** True when `len` more payload bytes from `from` fit the other side's window. */
  fits(from: LinkSide<M>, to: LinkSide<M>, len: number): boolean {
    const inFlight = (from.txCnt - to.fwdCnt) >>> 0;
    return inFlight + len <= to.bufAlloc;
  }
}

/** Links ended a moment ago, remembered per table for late packets (a crossing SHUTDOWN or credit update). */
const RECENTLY_CLOSED_LINKS = 256;

/** One muxer's sibling connections: peer cid -> own port -> peer port -> link. */
export class SiblingLinkTable<M> {
  private readonly byPeer = new Map<number, Map<number, Map<number, SiblingLink<M>>>>();
  /** Keys "peerCid:ownPort:peerPort" of links ended a moment ago, oldest first (made per close, not per packet). */
  private readonly recent = new Set<string>();
  /** Links in the table. */
  size = 0;
  /** Links this muxer's guest requested that are not answered yet. */
  pendingRequests = 0;

  get(peerCid: number, ownPort: number, peerPort: number): SiblingLink<M> | undefined {
    return this.byPeer.get(peerCid)?.get(ownPort)?.get(peerPort);
  }

  add(peerCid: number, ownPort: number, peerPort: number, link: SiblingLink<M>): void {
    let ports = this.byPeer.get(peerCid);
    if (ports === undefined) this.byPeer.set(peerCid, (ports = new Map()));
    let peers = ports.get(ownPort);
    if (peers === undefined) ports.set(ownPort, (peers = new Map()));
    if (!peers.has(peerPort)) this.size++;
    peers.set(peerPort, link);
  }

  remove(peerCid: number, ownPort: number, peerPort: number): void {
    const ports = this.byPeer.get(peerCid);
    const peers = ports?.get(ownPort);
    if (peers === undefined || !peers.delete(peerPort)) return;
    this.size--;
    if (peers.size === 0) ports!.delete(ownPort);
    if (ports!.size === 0) this.byPeer.delete(peerCid);
  }

  /** Remembers an ended link: a packet of it that crossed the RST is routine, not hostile. */
  rememberClosed(peerCid: number, ownPort: number, peerPort: number): void {
    const key = `${peerCid}:${ownPort}:${peerPort}`;
    this.recent.delete(key);
    this.recent.add(key);
    if (this.recent.size > RECENTLY_CLOSED_LINKS) this.recent.delete(this.recent.values().next().value as string);
  }

  /** True when (peerCid, ownPort, peerPort) ended a moment ago (only asked for packets of no link). */
  closedRecently(peerCid: number, ownPort: number, peerPort: number): boolean {
    return this.recent.size > 0 && this.recent.has(`${peerCid}:${ownPort}:${peerPort}`);
  }

  /** Every link, then the table is empty. */
  drain(): SiblingLink<M>[] {
    const all: SiblingLink<M>[] = [];
    for (const ports of this.byPeer.values()) for (const peers of ports.values()) for (const l of peers.values()) all.push(l);
    this.byPeer.clear();
    this.size = 0;
    this.pendingRequests = 0;
    return all;
  }
}
