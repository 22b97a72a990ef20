// Connections between two sibling guests of one daemon, as the device sees them. The
// guests run the protocol end to end (credit, SHUTDOWN, RST are theirs, packets are
// copied from one guest's tx queue to the other's rx queue); the device keeps one
// record per connection so that it can
//  - refuse packets for connections that were never opened (RST, as for the host),
//  - check credit: a guest may send at most the peer's buf_alloc - (tx_cnt - fwd_cnt),
//  - bound the REQUESTs a guest leaves unanswered, and
//  - reset both ends when one guest goes away (its peer gets RST, not silence).
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
    this.a = { muxer: aMuxer, cid: aCid, port: aPort, txCnt: 0, bufAlloc: 0, fwdCnt: 0 };
    this.b = { muxer: bMuxer, cid: bCid, port: bPort, txCnt: 0, bufAlloc: 0, fwdCnt: 0 };
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
