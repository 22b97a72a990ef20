// What the back-end knows about one ring (vhost-user.rst "Ring states"): its
// configuration as the front-end set it (raw, in the front-end's user addresses), its
// notification fds, and, while it runs, the device half of the virtqueue.
//
//   stopped  -- SET_VRING_KICK -->  started  -- GET_VRING_BASE -->  stopped
//   started rings are processed only while enabled (SET_VRING_ENABLE, or always when
//   VHOST_USER_F_PROTOCOL_FEATURES was not negotiated).
import { EventFd } from '../native/fd-watch.js';
import type { VirtqueueDevice } from '../virtqueue/queue.js';
import { closeFds } from './framing.js';

export interface RingAddresses {
  /** Front-end user addresses of the three parts (SET_VRING_ADDR). */
  desc: number;
  used: number;
  avail: number;
  flags: number;
}

export class Vring {
  /** SET_VRING_NUM; 0 until set. */
  num = 0;
  addresses: RingAddresses | null = null;
  /**
   * SET_VRING_BASE: where the ring starts (split: the avail index; packed: both
   * positions with their wrap counters, kernel/virtqueue/packed-layout.ts). Updated
   * when the ring pauses.
   */
  base = 0;
  /** False until SET_VRING_BASE or a pause set `base`: the ring then starts fresh. */
  baseSet = false;
  /** Started by SET_VRING_KICK, stopped by GET_VRING_BASE. */
  started = false;
  enabled = false;
  /** Kick eventfd; null with polling (the no-fd flag) or before SET_VRING_KICK. */
  kick: EventFd | null = null;
  /** Call and error eventfds, -1 if none. */
  callFd = -1;
  errFd = -1;
  /** The device half while the ring is processed (started, enabled, memory mapped). */
  queue: VirtqueueDevice | null = null;
  pollTimer: NodeJS.Timeout | null = null;
  /** Shared-memory check: avail.idx as seen at start, and kicks that showed no change. */
  availCheck: { view: DataView; offset: number; atStart: number; kicksWithoutChange: number; done: boolean } | null = null;

  constructor(readonly index: number) {}

  get running(): boolean {
    return this.queue !== null;
  }

  replaceKick(fd: number): void {
    this.kick?.close();
    this.kick = fd >= 0 ? new EventFd(fd) : null;
  }

  replaceCall(fd: number): void {
    if (this.callFd >= 0) closeFds([this.callFd]);
    this.callFd = fd;
  }

  replaceErr(fd: number): void {
    if (this.errFd >= 0) closeFds([this.errFd]);
    this.errFd = fd;
  }

  /** Stops watching for kicks (the ring stays configured). */
  stopWatching(): void {
    this.kick?.stopWatching();
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  /** Back to the initial stopped state; closes the kick fd. Call and error fds stay. */
  resetToStopped(): void {
    this.stopWatching();
    this.kick?.close();
    this.kick = null;
    this.queue = null;
    this.availCheck = null;
    this.started = false;
    this.enabled = false;
    this.num = 0;
    this.addresses = null;
    this.base = 0;
    this.baseSet = false;
  }

  /** Closes every fd (client gone). */
  closeAll(): void {
    this.resetToStopped();
    this.replaceCall(-1);
    this.replaceErr(-1);
  }
}
