// The scale bench's load: simulated guests (sim-guest.ts) on the daemon's vhost-user
// sockets and, for each, connections whose host ends go through the daemon's host ends
// as any host program's would: the hybrid Unix socket (CONNECT), the TCP forward, and
// guest connects to host port HOST_PORT, which the daemon routes to <uds-path>_HOST_PORT.
// Both ends of every connection live in this process, so each is checked end to end
// (checked-connection.ts). The initiator sends an 8-byte id first (magic, number) so the
// acceptor knows which connection it got.
//
// Many guests per process; the bench runs several such processes (worker.ts), the
// tests one in their own process.
import { type Server, type Socket, connect as tcpConnect, createServer } from 'node:net';
import { rmSync } from 'node:fs';
import { HybridConnectError, connectHybridVsock } from '../../appliance/pingpong/hybrid-connect.js';
import type { VsockDriverOptions } from '../../drivers/virtio-vsock/driver/driver.js';
import type { RawVsockListener } from '../../drivers/virtio-vsock/driver/raw-listener.js';
import { VSOCK_CID_HOST } from '../../drivers/virtio-vsock/header.js';
import { type ByteEnd, rawEnd, streamEnd } from './byte-end.js';
import { CheckedConnection, CheckedEnd, type ConnectionKind, type ConnectionOutcome, type SendMode } from './checked-connection.js';
import { makePattern } from './checked-stream.js';
import { SimGuest } from './sim-guest.js';

/** Guest port the hybrid CONNECTs and the TCP forward reach. */
export const GUEST_PORT = 5000;
/** Host port guests connect to (the daemon connects <uds-path>_HOST_PORT). */
export const HOST_PORT = 6000;
/** Guest port of the ping-pong echo. */
export const PING_PORT = 7000;
/** Guest port nobody listens on: CONNECT there tells attached (RST) from not attached. */
const UNUSED_GUEST_PORT = 1;

const ID_BYTES = 8;
const ID_MAGIC = 0x5343414c; // "SCAL"

export interface VmPlan {
  cid: number;
  /** The daemon's vhost-user socket for this VM. */
  socketPath: string;
  /** The daemon's hybrid socket for this VM. */
  udsPath: string;
  /** The daemon's TCP forward to this VM's GUEST_PORT (127.0.0.1), or null. */
  tcpPort: number | null;
  /**
   * A greedy guest: the largest rings the driver allows, full of the largest buffers
   * (256 rx buffers and 256 tx slots of 64 KiB: 16 MiB each way per kick), as a guest
   * that floods may post. Default: GeneratorOptions' driver settings.
   */
  greedy?: boolean;
}

/** What a greedy guest's driver posts (see VmPlan.greedy), and the memory that takes. */
const GREEDY_DRIVER: VsockDriverOptions = { queueSize: 256, rxBuffers: 256, txSlots: 256 };
const GREEDY_MEMORY_BYTES = 64 << 20;

export interface PacingOptions {
  /** Bytes per second per direction of a paced connection. */
  rate: number;
  /** A paced end writes once it may send this many bytes. */
  chunk: number;
}

export interface GeneratorOptions {
  driver?: VsockDriverOptions;
  memoryBytes?: number;
  pacing?: PacingOptions;
}

/** A connection's bytes received so far, each way. */
export interface ConnectionCounters {
  id: number;
  cid: number;
  kind: ConnectionKind;
  hostToGuest: number;
  guestToHost: number;
  open: boolean;
}

interface Vm {
  plan: VmPlan;
  guest: SimGuest | null;
  listener: RawVsockListener | null;
  hostServer: Server | null;
  connections: Set<CheckedConnection>;
}

const PACING_TICK_MS = 50;

function encodeId(id: number): Buffer {
  const b = Buffer.allocUnsafe(ID_BYTES);
  b.writeUInt32LE(ID_MAGIC, 0);
  b.writeUInt32LE(id, 4);
  return b;
}

/**
 * Reads the 8-byte id from the front of an accepted end, then hands the end and the
 * bytes past the id to `onId` (null id: the stream ended or had no valid id).
 */
function readId(end: ByteEnd, onId: (id: number | null, rest: Buffer | null) => void): void {
  let head: Buffer = Buffer.alloc(0);
  let done = false;
  const finish = (id: number | null, rest: Buffer | null): void => {
    if (done) return;
    done = true;
    onId(id, rest);
  };
  end.setHandlers({
    data: (c) => {
      if (done) return;
      head = head.length === 0 ? c : Buffer.concat([head, c]);
      if (head.length < ID_BYTES) return;
      if (head.readUInt32LE(0) !== ID_MAGIC) return finish(null, null);
      finish(head.readUInt32LE(4), head.subarray(ID_BYTES));
    },
    end: () => finish(null, null),
    drain: () => {},
    close: () => finish(null, null),
  });
}

export class LoadGenerator {
  readonly pattern = makePattern();
  private readonly vms = new Map<number, Vm>();
  private readonly pending = new Map<number, CheckedConnection>();
  private nextId = 1;
  private pacing: PacingOptions;
  private pacer: NodeJS.Timeout | null = null;
  private lastTick = 0;
  /** Paced ends, for the pacer. */
  private readonly paced = new Set<CheckedEnd>();
  /** Connections accepted with an id nobody waits for (a bug or a misrouted stream). */
  strayAccepts = 0;

  constructor(private readonly opts: GeneratorOptions = {}) {
    this.pacing = opts.pacing ?? { rate: 4096, chunk: 1024 };
  }

  get cids(): number[] {
    return [...this.vms.keys()];
  }

  planOf(cid: number): VmPlan | null {
    return this.vms.get(cid)?.plan ?? null;
  }

  guestOf(cid: number): SimGuest | null {
    return this.vms.get(cid)?.guest ?? null;
  }

  connectionsOf(cid: number): CheckedConnection[] {
    return [...(this.vms.get(cid)?.connections ?? [])];
  }

  setPacing(p: PacingOptions): void {
    this.pacing = p;
  }

  // ---- VMs ---------------------------------------------------------------------------------

  /** Attaches a simulated guest and waits until the daemon has it attached. */
  async attach(plan: VmPlan): Promise<void> {
    let vm = this.vms.get(plan.cid);
    if (vm?.guest) throw new Error(`cid ${plan.cid} is attached already`);
    if (!vm) {
      vm = { plan, guest: null, listener: null, hostServer: null, connections: new Set() };
      this.vms.set(plan.cid, vm);
    }
    const guest = await SimGuest.attach({
      cid: plan.cid,
      socketPath: plan.socketPath,
      memoryBytes: plan.greedy ? GREEDY_MEMORY_BYTES : this.opts.memoryBytes,
      driver: plan.greedy ? { ...this.opts.driver, ...GREEDY_DRIVER } : this.opts.driver,
    });
    vm.guest = guest;
    vm.listener = guest.driver.listenRaw(GUEST_PORT, (raw) => this.accepted(plan.cid, rawEnd(raw)));
    if (vm.hostServer === null) {
      const path = `${plan.udsPath}_${HOST_PORT}`;
      rmSync(path, { force: true });
      const server = createServer((s) => this.accepted(plan.cid, streamEnd(s)));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => resolve());
      });
      vm.hostServer = server;
    }
    await waitUntilAttached(plan.udsPath);
  }

  /** Takes the VM away: in order (the driver stops the device), or at once (`vanish`: the front end's socket closes). */
  async detach(cid: number, how: 'orderly' | 'vanish' = 'orderly'): Promise<void> {
    const vm = this.vms.get(cid);
    if (!vm?.guest) return;
    const guest = vm.guest;
    vm.guest = null;
    vm.listener?.close();
    vm.listener = null;
    if (how === 'vanish') await guest.vanish();
    else await guest.detach();
    for (const c of vm.connections) c.destroy();
  }

  /** Detaches every VM and closes the host listeners. */
  async close(): Promise<void> {
    this.stopPacer();
    for (const cid of this.vms.keys()) await this.detach(cid);
    for (const vm of this.vms.values()) {
      const server = vm.hostServer;
      vm.hostServer = null;
      if (server) await new Promise<void>((r) => server.close(() => r()));
    }
  }

  // ---- Connections -----------------------------------------------------------------------

  /**
   * Opens `count` connections to VM `cid`, kinds in turn (hybrid, tcp, guest; tcp is
   * skipped without a forward), `parallel` at a time; resolves when all are open (or failed).
   */
  async open(cid: number, count: number, parallel = 16): Promise<CheckedConnection[]> {
    const vm = this.vms.get(cid);
    if (!vm?.guest) throw new Error(`cid ${cid} is not attached`);
    const kinds: ConnectionKind[] = vm.plan.tcpPort !== null ? ['hybrid', 'tcp', 'guest'] : ['hybrid', 'guest'];
    const made: CheckedConnection[] = [];
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < count) {
        const k = kinds[next++ % kinds.length]!;
        made.push(await this.openOne(vm, k));
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, count) }, lane));
    return made;
  }

  private openOne(vm: Vm, kind: ConnectionKind): Promise<CheckedConnection> {
    const id = this.nextId++;
    const conn = new CheckedConnection(id, vm.plan.cid, kind);
    vm.connections.add(conn);
    this.pending.set(id, conn);
    return new Promise<CheckedConnection>((resolve) => {
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        resolve(conn);
      };
      conn.closed.then(settle, settle);
      const fail = (e: Error): void => {
        this.pending.delete(id);
        conn.failOpen(e);
        settle();
      };
      const started = (end: ByteEnd, side: 'host' | 'guest'): void => {
        end.write(encodeId(id));
        const checked = this.makeEnd(conn, end, side);
        if (side === 'host') conn.host = checked;
        else conn.guest = checked;
        checked.start(null);
        this.whenPaired(conn, settle);
      };
      if (kind === 'hybrid') {
        connectHybridVsock(vm.plan.udsPath, GUEST_PORT).then((s) => started(streamEnd(s), 'host'), fail);
      } else if (kind === 'tcp') {
        const s = tcpConnect({ host: '127.0.0.1', port: vm.plan.tcpPort! });
        s.setNoDelay(true);
        s.once('error', fail);
        s.once('connect', () => {
          s.off('error', fail);
          started(streamEnd(s), 'host');
        });
      } else {
        const guest = vm.guest;
        if (guest === null) return fail(new Error('VM detached'));
        const s = guest.driver.connect({ cid: VSOCK_CID_HOST, port: HOST_PORT });
        s.once('error', fail);
        s.once('connect', () => {
          s.off('error', fail);
          started(streamEnd(s), 'guest');
        });
      }
    });
  }

  private pairWaiters = new Map<CheckedConnection, () => void>();

  private whenPaired(conn: CheckedConnection, then: () => void): void {
    if (conn.host !== null && conn.guest !== null) then();
    else this.pairWaiters.set(conn, then);
  }

  private accepted(cid: number, end: ByteEnd): void {
    readId(end, (id, rest) => {
      const conn = id === null ? undefined : this.pending.get(id);
      if (conn === undefined || conn.cid !== cid) {
        this.strayAccepts++;
        end.destroy();
        return;
      }
      this.pending.delete(id!);
      const side = conn.host === null ? 'host' : 'guest';
      const checked = this.makeEnd(conn, end, side);
      if (side === 'host') conn.host = checked;
      else conn.guest = checked;
      checked.start(rest);
      const w = this.pairWaiters.get(conn);
      this.pairWaiters.delete(conn);
      w?.();
    });
  }

  private makeEnd(conn: CheckedConnection, end: ByteEnd, side: 'host' | 'guest'): CheckedEnd {
    const offset = (conn.id * 7919 + (side === 'host' ? 0 : 524287)) * 61;
    const checked = new CheckedEnd(end, this.pattern, offset, () => {
      this.paced.delete(checked);
      conn.endClosed();
    });
    return checked;
  }

  // ---- Load --------------------------------------------------------------------------------

  /** Sets how every open connection of VM `cid` sends. */
  setMode(cid: number, mode: SendMode): void {
    for (const c of this.vms.get(cid)?.connections ?? []) this.setConnectionMode(c, mode);
  }

  setConnectionMode(c: CheckedConnection, mode: SendMode): void {
    for (const end of [c.host, c.guest]) {
      if (end === null || end.closed) continue;
      if (mode === 'paced') {
        // A random phase, so the paced writes of all connections do not come in one burst per tick.
        end.tokens = Math.random() * this.pacing.chunk;
        this.paced.add(end);
      } else {
        this.paced.delete(end);
      }
      end.setMode(mode);
    }
    if (mode === 'paced') this.startPacer();
  }

  private startPacer(): void {
    if (this.pacer !== null) return;
    this.lastTick = performance.now();
    this.pacer = setInterval(() => {
      const now = performance.now();
      const bytes = (this.pacing.rate * (now - this.lastTick)) / 1000;
      this.lastTick = now;
      const cap = 2 * Math.max(this.pacing.chunk, bytes);
      for (const end of this.paced) end.addTokens(bytes, cap, this.pacing.chunk);
    }, PACING_TICK_MS);
  }

  private stopPacer(): void {
    if (this.pacer !== null) clearInterval(this.pacer);
    this.pacer = null;
  }

  counters(): ConnectionCounters[] {
    const out: ConnectionCounters[] = [];
    for (const vm of this.vms.values()) {
      for (const c of vm.connections) out.push({ id: c.id, cid: c.cid, kind: c.kind, hostToGuest: c.hostToGuestBytes, guestToHost: c.guestToHostBytes, open: c.isOpen });
    }
    return out;
  }

  /**
   * Ends both directions of every connection of `cids` and waits up to `timeoutMs` for
   * both ends to close; returns each connection's outcome (stuck ones included) and
   * forgets them.
   */
  async finish(cids: readonly number[], timeoutMs: number): Promise<{ outcomes: ConnectionOutcome[]; stuck: ConnectionOutcome[] }> {
    const conns: CheckedConnection[] = [];
    for (const cid of cids) {
      const vm = this.vms.get(cid);
      if (!vm) continue;
      for (const c of vm.connections) conns.push(c);
      vm.connections.clear();
    }
    for (const c of conns) {
      if (c.host) this.paced.delete(c.host);
      if (c.guest) this.paced.delete(c.guest);
      c.finishSending();
    }
    let timer: NodeJS.Timeout | null = null;
    const deadline = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    await Promise.race([Promise.all(conns.map((c) => c.closed)), deadline]);
    if (timer) clearTimeout(timer);
    const outcomes: ConnectionOutcome[] = [];
    const stuck: ConnectionOutcome[] = [];
    for (const c of conns) {
      if (c.isClosed) {
        outcomes.push(c.outcome());
      } else {
        const o = c.outcome();
        o.problems.unshift(`stuck: host end ${c.host?.closed ? 'closed' : 'open'}, guest end ${c.guest?.closed ? 'closed' : 'open'}`);
        stuck.push(o);
        c.destroy();
      }
    }
    return { outcomes, stuck };
  }

  /** Forgets the connections of `cid` that are closed (after a detach), returning how many. */
  dropClosed(cid: number): number {
    const vm = this.vms.get(cid);
    if (!vm) return 0;
    let n = 0;
    for (const c of vm.connections) {
      if (c.isClosed) {
        vm.connections.delete(c);
        n++;
      }
    }
    return n;
  }
}

/**
 * Resolves once the daemon has the VM attached: a CONNECT to a port nobody listens on
 * gets "ERR ENOTCONN" while it is not, and a refusal from the guest once it is.
 */
export async function waitUntilAttached(udsPath: string): Promise<void> {
  for (;;) {
    try {
      const s: Socket = await connectHybridVsock(udsPath, UNUSED_GUEST_PORT);
      s.destroy();
      return;
    } catch (e) {
      if (!(e instanceof HybridConnectError) || !e.message.includes('ENOTCONN')) return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
