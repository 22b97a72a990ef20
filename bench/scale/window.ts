// Throughput over a measuring window, from two snapshots of every connection's byte
// counters: per connection and per VM, with their spreads and fairness indexes.
import type { ConnectionCounters } from './load-generator.js';
import { type Spread, demandNormalizedJain, jainIndex, spreadOf } from './fairness.js';

export interface WindowThroughput {
  seconds: number;
  /** Connections present at both ends of the window, of the VMs measured. */
  connections: number;
  /** Bytes per second, both directions together, per connection of the paced (quiet) VMs and of the flooding VM. */
  pacedConnection: Spread;
  floodConnection: Spread;
  /** Over every connection measured (paced and flooding): the median and the slowest against it. */
  allConnections: Spread;
  /** Connections below half the median of all connections, and those that moved nothing in a direction. */
  belowHalfMedian: number;
  /** The VMs of the connections below half the median: cid -> how many (the 10 with most). */
  belowHalfMedianByCid: Record<string, number>;
  stalled: number;
  /** Bytes per second per VM (both directions), paced VMs and flooding ones. */
  pacedVm: Spread;
  floodVm: Spread;
  /** Jain's index across VMs of throughput over max-min fair share (fairness.ts), and of raw throughput across the paced VMs. */
  jainVmsFairShare: number;
  jainPacedVmsRaw: number;
  /** Jain's index across the flooding VM's own connections (raw). */
  jainFloodConnections: number;
  /** Total bytes per second each way. */
  hostToGuest: number;
  guestToHost: number;
}

export interface WindowInput {
  before: readonly ConnectionCounters[];
  after: readonly ConnectionCounters[];
  seconds: number;
  /** VMs whose connections count (others, e.g. misbehaving or churned ones, are left out). */
  cids: ReadonlySet<number>;
  floodCids: ReadonlySet<number>;
  /** What a paced VM asks for: bytes per second, both directions of all its connections. */
  pacedVmDemand: number;
}

export function windowThroughput(w: WindowInput): WindowThroughput {
  const start = new Map<number, ConnectionCounters>();
  for (const c of w.before) start.set(c.id, c);
  const perVm = new Map<number, number>();
  const paced: number[] = [];
  const flood: number[] = [];
  const rateOf: Array<[number, number]> = []; // [cid, rate]
  let stalled = 0;
  let h2g = 0;
  let g2h = 0;
  for (const c of w.after) {
    if (!w.cids.has(c.cid)) continue;
    const s = start.get(c.id);
    if (s === undefined || !s.open || !c.open) continue;
    const dh = c.hostToGuest - s.hostToGuest;
    const dg = c.guestToHost - s.guestToHost;
    if (dh === 0 || dg === 0) stalled++;
    h2g += dh;
    g2h += dg;
    const rate = (dh + dg) / w.seconds;
    (w.floodCids.has(c.cid) ? flood : paced).push(rate);
    rateOf.push([c.cid, rate]);
    perVm.set(c.cid, (perVm.get(c.cid) ?? 0) + rate);
  }
  const all = [...paced, ...flood];
  const allSpread = spreadOf(all);
  const slow = new Map<number, number>();
  for (const [cid, rate] of rateOf) if (rate < 0.5 * allSpread.median) slow.set(cid, (slow.get(cid) ?? 0) + 1);
  const vmCids = [...perVm.keys()];
  const achieved = vmCids.map((cid) => perVm.get(cid)!);
  const demands = vmCids.map((cid) => (w.floodCids.has(cid) ? Infinity : w.pacedVmDemand));
  const pacedVms = vmCids.filter((cid) => !w.floodCids.has(cid)).map((cid) => perVm.get(cid)!);
  const floodVms = vmCids.filter((cid) => w.floodCids.has(cid)).map((cid) => perVm.get(cid)!);
  return {
    seconds: w.seconds,
    connections: all.length,
    pacedConnection: spreadOf(paced),
    floodConnection: spreadOf(flood),
    allConnections: allSpread,
    belowHalfMedian: all.filter((x) => x < 0.5 * allSpread.median).length,
    belowHalfMedianByCid: Object.fromEntries([...slow].sort((a, b) => b[1] - a[1]).slice(0, 10)),
    stalled,
    pacedVm: spreadOf(pacedVms),
    floodVm: spreadOf(floodVms),
    jainVmsFairShare: demandNormalizedJain(achieved, demands),
    jainPacedVmsRaw: jainIndex(pacedVms),
    jainFloodConnections: jainIndex(flood),
    hostToGuest: h2g / w.seconds,
    guestToHost: g2h / w.seconds,
  };
}
