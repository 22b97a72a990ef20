// Connections by (local port, remote cid, remote port): the demultiplexing key of a
// received packet (virtio 1.2, 5.10.6.3: a connection is identified by both ends).
// Nested maps keyed by numbers: a lookup allocates nothing.

export class ConnectionTable<C> {
  private readonly byLocal = new Map<number, Map<number, Map<number, C>>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(localPort: number, remoteCid: number, remotePort: number): C | undefined {
    return this.byLocal.get(localPort)?.get(remotePort)?.get(remoteCid);
  }

  /** True when some connection uses `localPort` as its local end. */
  hasLocalPort(localPort: number): boolean {
    return this.byLocal.has(localPort);
  }

  add(localPort: number, remoteCid: number, remotePort: number, conn: C): void {
    let byRemotePort = this.byLocal.get(localPort);
    if (!byRemotePort) this.byLocal.set(localPort, (byRemotePort = new Map()));
    let byCid = byRemotePort.get(remotePort);
    if (!byCid) byRemotePort.set(remotePort, (byCid = new Map()));
    if (!byCid.has(remoteCid)) this.count++;
    byCid.set(remoteCid, conn);
  }

  /** Removes the entry when it is `conn` (a newer connection on the same key stays). */
  delete(localPort: number, remoteCid: number, remotePort: number, conn: C): boolean {
    const byRemotePort = this.byLocal.get(localPort);
    const byCid = byRemotePort?.get(remotePort);
    if (!byCid || byCid.get(remoteCid) !== conn) return false;
    byCid.delete(remoteCid);
    this.count--;
    if (byCid.size === 0) byRemotePort!.delete(remotePort);
    if (byRemotePort!.size === 0) this.byLocal.delete(localPort);
    return true;
  }

  /** Every connection (a snapshot: safe to delete while iterating it). */
  all(): C[] {
    const out: C[] = [];
    for (const byRemotePort of this.byLocal.values()) for (const byCid of byRemotePort.values()) for (const c of byCid.values()) out.push(c);
    return out;
  }
}
