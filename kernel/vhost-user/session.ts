// One front-end (one QEMU) connected to the back-end: reads its messages one at a time,
// applies them to the device model and the rings, replies, and cleans up everything
// when the connection ends. Device-agnostic: everything device-specific comes from the
// VirtioDeviceModel (features, queue count and size, config space, queue processing).
//
// Ring lifecycle (vhost-user.rst "Ring states"): a ring starts on SET_VRING_KICK and
// stops on GET_VRING_BASE; it is processed while started and enabled (enabled from the
// start when VHOST_USER_F_PROTOCOL_FEATURES was not negotiated, otherwise by
// SET_VRING_ENABLE 1) and a memory table is mapped. Only then is a VirtqueueDevice
// built (ring addresses translated from QEMU user addresses to guest-physical ones) and
// model.queueReady called. A ring that pauses (disabled, or a new memory table) keeps
// its avail index in `base`; a stop (GET_VRING_BASE) replies with it and forgets the
// ring. When the last started ring stops (QEMU's vhost_dev_stop: guest reset, reboot,
// VM stop) the model is reset; the next start activates it again, with the memory table
// sent for that start. A disconnect stops everything, resets the model, unmaps the
// memory and closes every fd.
import type { UnixFdSocket } from '../native/fd-watch.js';
import { eventfdWrite } from '../native/index.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { DeviceContext, VirtioDeviceModel } from '../transport/virtio-device.js';
import type { VirtqueueDevice } from '../virtqueue/queue.js';
import { deviceQueueFor, ringLayoutOf, ringPartLayout } from '../virtqueue/ring.js';
import { VirtqueueError } from '../virtqueue/errors.js';
import { checkQueueSize, hasFeature } from '../virtqueue/layout.js';
import { encodeReply, encodeU64, encodeVringState, encodeConfig, type VhostUserMessage } from './codec.js';
import { VhostUserError } from './errors.js';
import { closeFds, readMessage } from './framing.js';
import { VhostMemoryTable } from './memory-table.js';
import { ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, VHOST_VRING_F_LOG, requestName } from './protocol.js';
import { Vring } from './vring.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type VhostUserLogger = (level: LogLevel, message: string) => void;

/** Protocol features offered by default: REPLY_ACK and CONFIG (QEMU 7.2's vhost-user-vsock requires CONFIG). */
export const DEFAULT_PROTOCOL_FEATURES = (1n << ProtocolFeature.REPLY_ACK) | (1n << ProtocolFeature.CONFIG);

/**
 * Kicks on a ring whose avail.idx never moved (in our mapping) before we warn that guest
 * memory is not shared. A guest kicks only after publishing entries; QEMU 7.2 adds one
 * kick of its own per ring when it starts the device (observed), hence 2.
 */
const KICKS_BEFORE_NOT_SHARED_WARNING = 2;

const NOT_SHARED_HINT = 'start QEMU with -object memory-backend-memfd,id=mem,size=<RAM>,share=on -machine memory-backend=mem';

export interface SessionHooks {
  log: VhostUserLogger;
  ringStarted(index: number): void;
  ringStopped(index: number): void;
  memoryMapped(description: string): void;
  /** A problem worth reporting that does not end the session (e.g. memory that looks unshared). */
  warning(err: VhostUserError): void;
  /** The device model threw; the session goes on. */
  deviceError(err: VhostUserError): void;
}

export interface SessionOptions {
  protocolFeatures: bigint;
  /** Interval of the kick poll for rings set up with the no-fd flag. */
  pollIntervalMs: number;
  /**
   * After SET_FEATURES starts the device, how long to wait for SET_MEM_TABLE before
   * warning that guest RAM is not shared (QEMU then fails its start and sends nothing).
   */
  memoryTableTimeoutMs: number;
}

/** How a session ended. */
export interface SessionEnd {
  /** 'eof' (the front-end closed), 'closed' (we closed it), or 'error'. */
  reason: 'eof' | 'closed' | 'error';
  error: VhostUserError | null;
}

/** A request refused without dropping the front-end (acked with 1 under REPLY_ACK). */
const REFUSED = Symbol('refused');

/** Guest-triggered reports (refused chains, model exceptions) logged per session before going quiet. */
const NOISY_LOG_LIMIT = 20;

/**
 * Reply bytes queued in user space (the kernel's socket buffer is full: the front-end
 * does not read) before the front-end is dropped. QEMU reads each reply before its next
 * request, so it never has more than one outstanding; without a bound, a front-end that
 * only writes makes the queue grow with every request (200k GET_FEATURES: ~130 MB).
 */
export const MAX_QUEUED_REPLY_BYTES = 64 * 1024;

/** Requests whose reply carries a body of its own (vhost-user.rst "Communication"). */
const HAS_REPLY = new Set<number>([Request.GET_FEATURES, Request.GET_PROTOCOL_FEATURES, Request.GET_VRING_BASE, Request.GET_QUEUE_NUM, Request.GET_CONFIG]);

/** A system call failure (it has `syscall`) is a socket error; anything else is our bug. */
function asVhostUserError(err: unknown): VhostUserError {
  if (err instanceof VhostUserError) return err;
  const e = err as Error & { syscall?: string; code?: string };
  if (typeof e.syscall === 'string') return new VhostUserError('ERR_VHOST_USER_SOCKET', `${e.syscall}: ${e.message}`);
  return new VhostUserError('ERR_VHOST_USER_INTERNAL', `internal error: ${e.stack ?? String(err)}`);
}

/** Takes a SET_VRING_KICK/CALL/ERR message's eventfd out of its fds (-1 with the no-fd flag). */
function takeFd(msg: VhostUserMessage): number {
  return msg.payload.type === 'vring-file' && !msg.payload.noFd ? (msg.fds.shift() ?? -1) : -1;
}

export class VhostUserSession {
  readonly #socket: UnixFdSocket;
  readonly #model: VirtioDeviceModel;
  readonly #hooks: SessionHooks;
  readonly #opts: SessionOptions;
  readonly #rings: Vring[];
  readonly #ctx: DeviceContext;
  #table: VhostMemoryTable | null = null;
  #ackedFeatures = 0n;
  #ackedProtocolFeatures = 0n;
  #activated = false;
  #closing = false;
  #memoryTableTimer: NodeJS.Timeout | null = null;
  #noisyCount = 0;
  /** Reply bytes handed to the socket since its send queue was last empty (an upper bound of what it holds). */
  #queuedReplyBytes = 0;

  constructor(
    readonly id: number,
    socket: UnixFdSocket,
    model: VirtioDeviceModel,
    hooks: SessionHooks,
    opts: SessionOptions,
  ) {
    this.#socket = socket;
    this.#model = model;
    this.#hooks = hooks;
    this.#opts = opts;
    this.#rings = Array.from({ length: model.numQueues }, (_, i) => new Vring(i));
    socket.on('drain', () => {
      this.#queuedReplyBytes = 0;
    });
    const session = this;
    this.#ctx = {
      get memory(): GuestMemory {
        if (!session.#table) throw new VhostUserError('ERR_VHOST_USER_MEMORY', 'no memory table is mapped');
        return session.#table.memory;
      },
      interrupt: (index: number) => this.#interrupt(index),
    };
  }

  /** Features offered in GET_FEATURES: the model's plus VHOST_USER_F_PROTOCOL_FEATURES. */
  get offeredFeatures(): bigint {
    return this.#model.features | (1n << VHOST_USER_F_PROTOCOL_FEATURES);
  }

  /** The guest memory of the current memory table, or null. */
  get memory(): GuestMemory | null {
    return this.#table?.memory ?? null;
  }

  /**
   * Serves messages until the front-end leaves, close() is called, or a message is
   * refused. Always cleans up before resolving; never rejects.
   */
  async run(): Promise<SessionEnd> {
    let end: SessionEnd = { reason: 'eof', error: null };
    try {
      for (;;) {
        const msg = await readMessage(this.#socket);
        if (msg === null) {
          end = { reason: this.#closing ? 'closed' : 'eof', error: null };
          break;
        }
        this.#hooks.log('debug', `session ${this.id}: ${requestName(msg.request)}${msg.needReply ? ' (needs reply)' : ''}`);
        try {
          this.#dispatch(msg);
        } finally {
          closeFds(msg.fds); // fds no handler claimed
        }
      }
    } catch (err) {
      end = this.#closing
        ? { reason: 'closed', error: null }
        : { reason: 'error', error: asVhostUserError(err) };
    } finally {
      this.#cleanup();
    }
    return end;
  }

  /** Ends the session (run() resolves once cleaned up). */
  close(): void {
    this.#closing = true;
    this.#socket.close();
  }

  // ---- dispatch -------------------------------------------------------------------------

  #dispatch(msg: VhostUserMessage): void {
    let reply: Uint8Array | null | typeof REFUSED;
    try {
      reply = this.#handle(msg);
    } catch (err) {
      // REPLY_ACK: tell the front-end it failed (non-zero), then drop it.
      if (msg.needReply && !HAS_REPLY.has(msg.request)) this.#trySend(encodeReply(msg.request, encodeU64(1)));
      throw err;
    }
    if (reply === REFUSED) {
      if (msg.needReply) this.#send(encodeReply(msg.request, encodeU64(1)));
    } else if (reply !== null) this.#send(encodeReply(msg.request, reply));
    else if (msg.needReply) this.#send(encodeReply(msg.request, encodeU64(0)));
  }

  /**
   * Applies one message; returns the reply payload for requests that have one, null when
   * done, REFUSED when refused without dropping the front-end. Throws to drop it.
   */
  #handle(msg: VhostUserMessage): Uint8Array | null | typeof REFUSED {
    const p = msg.payload;
    const r = msg.request;
    switch (r) {
      case Request.GET_FEATURES:
        return encodeU64(this.offeredFeatures);
      case Request.SET_FEATURES: {
        if (p.type !== 'u64') break;
        const extra = p.value & ~this.offeredFeatures;
        if (extra !== 0n) throw new VhostUserError('ERR_VHOST_USER_FEATURES', `SET_FEATURES: 0x${p.value.toString(16)} acks bits 0x${extra.toString(16)} that were not offered (offered 0x${this.offeredFeatures.toString(16)})`, r);
        this.#ackedFeatures = p.value;
        this.#armMemoryTableTimer();
        return null;
      }
      case Request.GET_PROTOCOL_FEATURES:
        return encodeU64(this.#opts.protocolFeatures);
      case Request.SET_PROTOCOL_FEATURES: {
        if (p.type !== 'u64') break;
        const extra = p.value & ~this.#opts.protocolFeatures;
        if (extra !== 0n) throw new VhostUserError('ERR_VHOST_USER_FEATURES', `SET_PROTOCOL_FEATURES: 0x${p.value.toString(16)} acks bits 0x${extra.toString(16)} that were not offered (offered 0x${this.#opts.protocolFeatures.toString(16)})`, r);
        this.#ackedProtocolFeatures = p.value;
        return null;
      }
      case Request.GET_QUEUE_NUM:
        return encodeU64(this.#model.numQueues);
      case Request.SET_OWNER:
        return null; // "session start": nothing to set up beyond the connection itself
      case Request.RESET_OWNER:
        // Deprecated; vhost-user.rst recommends ignoring it or disabling all rings. We stop them.
        this.#stopAllRings();
        return null;
      case Request.SET_MEM_TABLE:
        if (p.type !== 'mem-table') break;
        this.#setMemTable(p.regions, msg.fds.splice(0));
        return null;
      case Request.SET_VRING_NUM: {
        if (p.type !== 'vring-state') break;
        const ring = this.#ring(r, p.index);
        try {
          checkQueueSize(p.num, `ring ${p.index}`);
        } catch (err) {
          throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `SET_VRING_NUM: ${(err as Error).message}`, r);
        }
        if (p.num > this.#model.maxQueueSize) throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `SET_VRING_NUM: ring ${p.index} size ${p.num} exceeds the device maximum ${this.#model.maxQueueSize}`, r);
        if (ring.running && p.num !== ring.num) throw new VhostUserError('ERR_VHOST_USER_RING', `SET_VRING_NUM: ring ${p.index} is running with size ${ring.num}`, r);
        ring.num = p.num;
        return null;
      }
      case Request.SET_VRING_ADDR: {
        if (p.type !== 'vring-addr') break;
        const ring = this.#ring(r, p.index);
        if ((p.flags & VHOST_VRING_F_LOG) !== 0) throw new VhostUserError('ERR_VHOST_USER_UNSUPPORTED', `SET_VRING_ADDR: ring ${p.index} asks for used-ring logging (VHOST_VRING_F_LOG), which this back-end does not offer`, r);
        if (p.flags !== 0) throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `SET_VRING_ADDR: ring ${p.index} has unknown flags 0x${p.flags.toString(16)}`, r);
        ring.addresses = { desc: p.desc, used: p.used, avail: p.avail, flags: p.flags };
        if (ring.running) {
          // "the back-end must support changing some configuration aspects on the fly"
          this.#pauseRing(ring);
          this.#tryStart(ring);
        }
        return null;
      }
      case Request.SET_VRING_BASE: {
        if (p.type !== 'vring-state') break;
        const ring = this.#ring(r, p.index);
        // A split ring's base is its 16-bit avail index; a packed ring's carries both
        // positions and wrap counters in 32 bits (checked when the ring starts).
        if (p.num > 0xffff && ringLayoutOf(this.#ackedFeatures) === 'split') throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `SET_VRING_BASE: ring ${p.index} base ${p.num} does not fit a split ring's 16-bit index`, r);
        if (ring.running) throw new VhostUserError('ERR_VHOST_USER_RING', `SET_VRING_BASE: ring ${p.index} is running`, r);
        ring.base = p.num;
        ring.baseSet = true;
        return null;
      }
      case Request.GET_VRING_BASE: {
        if (p.type !== 'vring-state') break;
        const ring = this.#ring(r, p.index);
        // "stop ring upon receiving VHOST_USER_GET_VRING_BASE"; the reply is the next avail index.
        if (ring.running) this.#pauseRing(ring);
        const base = ring.base;
        this.#stopRing(ring);
        return encodeVringState(p.index, base);
      }
      case Request.SET_VRING_KICK: {
        if (p.type !== 'vring-file') break;
        const ring = this.#ring(r, p.index);
        if (ring.running) this.#pauseRing(ring);
        ring.replaceKick(takeFd(msg));
        ring.started = true;
        // "If VHOST_USER_F_PROTOCOL_FEATURES has not been negotiated, the ring starts directly in the enabled state."
        if (!this.#protocolFeaturesNegotiated) ring.enabled = true;
        this.#tryStart(ring);
        return null;
      }
      case Request.SET_VRING_CALL: {
        if (p.type !== 'vring-file') break;
        this.#ring(r, p.index).replaceCall(takeFd(msg));
        return null;
      }
      case Request.SET_VRING_ERR: {
        if (p.type !== 'vring-file') break;
        this.#ring(r, p.index).replaceErr(takeFd(msg));
        return null;
      }
      case Request.SET_VRING_ENABLE: {
        if (p.type !== 'vring-state') break;
        const ring = this.#ring(r, p.index);
        if (p.num > 1) throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `SET_VRING_ENABLE: ring ${p.index} enable value ${p.num}, expected 0 or 1`, r);
        ring.enabled = p.num === 1;
        if (ring.enabled) this.#tryStart(ring);
        else if (ring.running) this.#pauseRing(ring);
        return null;
      }
      case Request.GET_CONFIG: {
        if (p.type !== 'config') break;
        const config = this.#model.config();
        if (p.offset + p.size > config.length) {
          // "vhost-user back-end uses zero length of payload to indicate an error"
          this.#hooks.log('warn', `session ${this.id}: GET_CONFIG of ${p.size} bytes at offset ${p.offset} is outside the ${config.length}-byte config space`);
          return new Uint8Array(0);
        }
        return encodeConfig(p.offset, p.flags, config.subarray(p.offset, p.offset + p.size));
      }
      case Request.SET_CONFIG: {
        if (p.type !== 'config') break;
        // The model's config space is read-only; "back-ends MUST NOT accept SET_CONFIG for
        // read-only configuration space fields". Refused, but the front-end stays.
        this.#hooks.log('warn', `session ${this.id}: SET_CONFIG of ${p.size} bytes at offset ${p.offset} refused: the device config space is read-only`);
        return REFUSED;
      }
      default:
        throw new VhostUserError('ERR_VHOST_USER_UNSUPPORTED', `${requestName(r)} is not supported by this back-end (its feature was not offered)`, r);
    }
    throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `${requestName(r)}: unexpected payload ${p.type}`, r);
  }

  get #protocolFeaturesNegotiated(): boolean {
    return hasFeature(this.#ackedFeatures, VHOST_USER_F_PROTOCOL_FEATURES);
  }

  #ring(request: number, index: number): Vring {
    const ring = this.#rings[index];
    if (ring === undefined) throw new VhostUserError('ERR_VHOST_USER_PAYLOAD', `${requestName(request)}: ring ${index} does not exist (the device has ${this.#rings.length} queues)`, request);
    return ring;
  }

  // ---- memory ----------------------------------------------------------------------------

  /**
   * QEMU starts a device (vhost_dev_start) with SET_FEATURES then SET_MEM_TABLE. When its
   * guest RAM has no fd (no memory-backend with share=on) it gives up between the two and
   * only logs "Failed initializing vhost-user memory map" on its own stderr: we would wait
   * forever, so say so after a while.
   */
  #armMemoryTableTimer(): void {
    if (this.#table !== null || this.#memoryTableTimer !== null) return;
    const since = Date.now();
    this.#memoryTableTimer = setTimeout(() => {
      this.#memoryTableTimer = null;
      if (this.#table !== null || this.#closing) return;
      this.#hooks.warning(
        new VhostUserError(
          'ERR_VHOST_USER_MEMORY_NOT_SHARED',
          `the front-end set features ${Date.now() - since} ms ago but sent no memory table: it probably cannot share guest RAM ` +
            `(QEMU then logs "Failed initializing vhost-user memory map"); ${NOT_SHARED_HINT}`,
        ),
      );
    }, this.#opts.memoryTableTimeoutMs);
    this.#memoryTableTimer.unref();
  }

  #clearMemoryTableTimer(): void {
    if (this.#memoryTableTimer) clearTimeout(this.#memoryTableTimer);
    this.#memoryTableTimer = null;
  }

  #setMemTable(regions: Parameters<typeof VhostMemoryTable.map>[0], fds: number[]): void {
    this.#clearMemoryTableTimer();
    const table = VhostMemoryTable.map(regions, fds); // closes the fds
    // Rings running over the old table pause (keeping their avail index) and restart
    // over the new one: their addresses are translated again.
    const paused = this.#rings.filter((ring) => ring.running);
    for (const ring of paused) this.#pauseRing(ring);
    this.#table?.unmap();
    this.#table = table;
    this.#hooks.log('info', `session ${this.id}: memory table mapped: ${table.describe()}`);
    this.#hooks.memoryMapped(table.describe());
    for (const ring of this.#rings) this.#tryStart(ring);
  }

  // ---- rings -----------------------------------------------------------------------------

  #translate(ring: Vring, userAddr: number, bytes: number, what: string): number {
    const gpa = this.#table!.userToGuest(userAddr, bytes);
    if (gpa === null) {
      throw new VhostUserError('ERR_VHOST_USER_RING', `ring ${ring.index}: ${what} at user address 0x${userAddr.toString(16)} (${bytes} bytes) is not inside one region of the memory table (${this.#table!.describe()})`);
    }
    return gpa;
  }

  /** Starts processing a ring if it is started, enabled, fully configured and memory is mapped. */
  #tryStart(ring: Vring): void {
    if (ring.running || !ring.started || !ring.enabled) return;
    if (this.#table === null || ring.num === 0 || ring.addresses === null) {
      const missing = [this.#table === null ? 'no memory table since the device last stopped' : '', ring.num === 0 ? 'no SET_VRING_NUM' : '', ring.addresses === null ? 'no SET_VRING_ADDR' : '']
        .filter((x) => x !== '')
        .join(', ');
      this.#hooks.log('warn', `session ${this.id}: ring ${ring.index} is started and enabled but cannot run yet: ${missing}`);
      return;
    }
    const n = ring.num;
    const a = ring.addresses;
    const features = this.#ackedFeatures & ~(1n << VHOST_USER_F_PROTOCOL_FEATURES);
    // Split or packed (virtio 1.2, 2.7 / 2.8), as the guest's driver accepted.
    const packed = ringLayoutOf(features) === 'packed';
    const parts = ringPartLayout(packed ? 'packed' : 'split', n);
    const desc = this.#translate(ring, a.desc, parts.descBytes, packed ? 'descriptor ring' : 'descriptor table');
    const avail = this.#translate(ring, a.avail, parts.availBytes, packed ? 'driver event suppression' : 'available ring');
    const used = this.#translate(ring, a.used, parts.usedBytes, packed ? 'device event suppression' : 'used ring');
    const memory = this.#table.memory;
    let queue: VirtqueueDevice;
    try {
      queue = deviceQueueFor(features, {
        name: `${this.#model.name} ring ${ring.index}`,
        index: ring.index,
        size: n,
        memory,
        descAddr: desc,
        availAddr: avail,
        usedAddr: used,
        ...(ring.baseSet ? { startIndex: ring.base } : {}),
        onError: (err) => this.#onQueueError(ring, err),
      });
    } catch (err) {
      throw new VhostUserError('ERR_VHOST_USER_RING', `ring ${ring.index}: ${(err as Error).message}`);
    }
    if (!this.#activated) {
      this.#deviceCall('activate', () => this.#model.activate(this.#ctx, features));
      this.#activated = true;
    }
    ring.queue = queue;
    // The word a guest's first kick must have changed: split, avail.idx; packed, the flags of the descriptor at our next position.
    const watched = packed ? desc + 16 * (queue.vringBase & 0x7fff) + 14 : avail + 2;
    const region = memory.locate(watched, 2);
    ring.availCheck = { view: region.view, offset: watched - region.guestAddr, atStart: region.view.getUint16(watched - region.guestAddr, true), kicksWithoutChange: 0, done: false };
    if (ring.kick) {
      ring.kick.onReadable(
        () => this.#onKick(ring),
        (err) => this.#hooks.log('error', `session ${this.id}: kick fd of ring ${ring.index} failed: ${err.message}`),
      );
    } else {
      // SET_VRING_KICK with the no-fd flag: "polling should be used instead of waiting for the kick".
      ring.pollTimer = setInterval(() => {
        if (ring.queue?.hasAvailable()) this.#kickModel(ring);
      }, this.#opts.pollIntervalMs);
    }
    this.#deviceCall('queueReady', () => this.#model.queueReady(ring.index, queue));
    this.#hooks.log('info', `session ${this.id}: ring ${ring.index} running (${packed ? 'packed' : 'split'}, size ${n}, base ${ring.base}, desc 0x${desc.toString(16)}, avail 0x${avail.toString(16)}, used 0x${used.toString(16)} guest-physical)`);
    this.#hooks.ringStarted(ring.index);
    // A kick may have been consumed before the ring could run: look once.
    this.#kickModel(ring);
  }

  /** Stops processing a ring, keeping its configuration and its avail index in `base`. */
  #pauseRing(ring: Vring): void {
    const q = ring.queue;
    if (!q) return;
    ring.stopWatching();
    // The model first: it may still return chains it held (a packed ring's base holds the
    // used position too, which those returns move).
    this.#deviceCall('queueStopped', () => this.#model.queueStopped(ring.index));
    ring.base = q.vringBase;
    ring.baseSet = true;
    ring.queue = null;
    ring.availCheck = null;
    this.#hooks.ringStopped(ring.index);
  }

  /** GET_VRING_BASE: forget the ring; when no ring is left started, the device stops. */
  #stopRing(ring: Vring): void {
    this.#pauseRing(ring);
    ring.resetToStopped();
    if (this.#rings.every((x) => !x.started)) this.#deviceStopped();
  }

  /**
   * No ring is started any more (QEMU's vhost_dev_stop: guest reset or reboot, VM stop):
   * the model is reset and the memory unmapped. The next start sends a fresh table.
   */
  #deviceStopped(): void {
    if (this.#activated) {
      this.#activated = false;
      this.#hooks.log('info', `session ${this.id}: every ring stopped: device reset`);
      this.#deviceCall('reset', () => this.#model.reset());
    }
    if (this.#table) {
      this.#table.unmap();
      this.#table = null;
      this.#hooks.log('info', `session ${this.id}: memory table unmapped`);
    }
  }

  #stopAllRings(): void {
    for (const ring of this.#rings) this.#pauseRing(ring);
    for (const ring of this.#rings) ring.resetToStopped();
    this.#deviceStopped();
  }

  #onKick(ring: Vring): void {
    const c = ring.availCheck;
    if (c !== null && !c.done) {
      if (c.view.byteLength > 0) this.#hooks.log('debug', `session ${this.id}: kick on ring ${ring.index} (avail.idx ${c.view.getUint16(c.offset, true)}, ${c.atStart} at start)`);
      // Shared-memory check: a guest kicks after publishing avail entries. If kicks keep
      // coming while avail.idx in our mapping never moves, the guest's writes do not reach
      // us: QEMU maps guest RAM privately (memory-backend without share=on).
      if (c.view.byteLength === 0 || c.view.getUint16(c.offset, true) !== c.atStart) c.done = true;
      else if (++c.kicksWithoutChange >= KICKS_BEFORE_NOT_SHARED_WARNING) {
        c.done = true;
        this.#hooks.warning(
          new VhostUserError(
            'ERR_VHOST_USER_MEMORY_NOT_SHARED',
            `ring ${ring.index}: ${c.kicksWithoutChange} kicks but its available ring never changed in the mapped memory: ` +
              `the guest's writes do not reach us, guest RAM is probably mapped privately by the front-end; ${NOT_SHARED_HINT}`,
          ),
        );
      }
    }
    this.#kickModel(ring);
  }

  /** The per-kick path: no allocation unless the model throws. */
  #kickModel(ring: Vring): void {
    if (!ring.queue) return;
    try {
      this.#model.kick(ring.index);
    } catch (err) {
      this.#reportDeviceError('kick', err);
    }
  }

  /** Logs guest-triggered problems, at most NOISY_LOG_LIMIT per session, then a count every 1000. */
  #noisy(level: LogLevel, message: string): void {
    const n = ++this.#noisyCount;
    if (n <= NOISY_LOG_LIMIT) this.#hooks.log(level, `session ${this.id}: ${message}${n === NOISY_LOG_LIMIT ? ' (further reports counted only)' : ''}`);
    else if (n % 1000 === 0) this.#hooks.log(level, `session ${this.id}: ${n} guest-triggered problems so far; latest: ${message}`);
  }

  #onQueueError(ring: Vring, err: VirtqueueError): void {
    this.#noisy('warn', err.message);
    // A broken ring (impossible avail.idx) is what SET_VRING_ERR's eventfd is for.
    if (ring.queue?.broken && ring.errFd >= 0) this.#signal(ring.errFd, `error fd of ring ${ring.index}`);
  }

  #interrupt(index: number): void {
    const ring = this.#rings[index];
    if (ring && ring.callFd >= 0) this.#signal(ring.callFd, `call fd of ring ${index}`);
  }

  #signal(fd: number, what: string): void {
    try {
      eventfdWrite(fd, 1);
    } catch (err) {
      this.#hooks.log('warn', `session ${this.id}: writing the ${what} failed: ${(err as Error).message}`);
    }
  }

  #deviceCall(what: string, f: () => void): void {
    try {
      f();
    } catch (err) {
      this.#reportDeviceError(what, err);
    }
  }

  #reportDeviceError(what: string, err: unknown): void {
    const e = new VhostUserError('ERR_VHOST_USER_DEVICE', `device ${this.#model.name}: ${what} threw: ${(err as Error).stack ?? String(err)}`);
    this.#noisy('error', e.message);
    this.#hooks.deviceError(e);
  }

  // ---- output and cleanup ------------------------------------------------------------------

  /** Sends a reply; drops the front-end (throws) when too many replies wait unread. */
  #send(buf: Uint8Array): void {
    if (this.#socket.send(buf)) return;
    this.#queuedReplyBytes += buf.length;
    if (this.#queuedReplyBytes > MAX_QUEUED_REPLY_BYTES) {
      throw new VhostUserError(
        'ERR_VHOST_USER_NOT_READING',
        `the front-end sends requests but does not read the replies: ${this.#queuedReplyBytes} bytes of replies wait (at most ${MAX_QUEUED_REPLY_BYTES}); dropped`,
      );
    }
  }

  #trySend(buf: Uint8Array): void {
    try {
      this.#socket.send(buf);
    } catch {
      // the client is being dropped anyway
    }
  }

  /** Releases everything; each step runs even if an earlier one failed. */
  #cleanup(): void {
    const step = (what: string, f: () => void): void => {
      try {
        f();
      } catch (err) {
        this.#hooks.log('error', `session ${this.id}: cleanup: ${what} failed: ${(err as Error).message}`);
      }
    };
    step('timer', () => this.#clearMemoryTableTimer());
    for (const ring of this.#rings) step(`pause ring ${ring.index}`, () => this.#pauseRing(ring));
    for (const ring of this.#rings) step(`close ring ${ring.index} fds`, () => ring.closeAll());
    this.#activated = false;
    this.#deviceCall('reset', () => this.#model.reset());
    step('unmap', () => this.#table?.unmap());
    this.#table = null;
    step('socket close', () => this.#socket.close());
  }

  /** Negotiated protocol features (for diagnostics). */
  get protocolFeatures(): bigint {
    return this.#ackedProtocolFeatures;
  }
}
