// The two halves of a virtqueue as drivers and device models see them, whatever the
// ring layout: split (virtio 1.2, 2.7) or packed (2.8). A driver or device model holds
// a VirtqueueDriver or a VirtqueueDevice and never learns which layout is behind it;
// kernel/virtqueue/ring.ts picks the layout from the negotiated features
// (VIRTIO_F_RING_PACKED, 6) and builds the matching half.
//
// The three ring parts keep the names of the split layout's parts (2.6):
//   desc   Descriptor Area: the split descriptor table, or the packed descriptor ring
//   avail  Driver Area: the split available ring, or the packed Driver Event Suppression
//   used   Device Area: the split used ring, or the packed Device Event Suppression
import type { GuestMemory } from '../memory/guest-memory.js';
import type { DescriptorChain } from './descriptor-chain.js';
import { VirtqueueError } from './errors.js';

export type RingLayout = 'split' | 'packed';

/** One ring part: its bytes (driver's view) and its device-visible address. */
export interface RingPart {
  bytes: Uint8Array;
  addr: number;
}

/** Receives each used chain: the token given at add time and the bytes the device wrote. */
export type UsedCallback<T> = (token: T, writtenLength: number) => void;

export interface DriverQueueOptions {
  name: string;
  index: number;
  size: number;
  desc: RingPart;
  avail: RingPart;
  used: RingPart;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_IN_ORDER negotiated (packed only: one used descriptor may stand for a batch, 2.8.8). */
  inOrder?: boolean;
}

/**
 * The driver half (2.7.13 / 2.8.21 "Supplying Buffers to The Device", 2.7.14 / 2.8.22
 * "Receiving Used Buffers From The Device"). Bookkeeping lives in JavaScript and is
 * never read back from shared memory; a device that breaks the ring protocol gets the
 * queue marked broken (`broken`, every later call throws it), never our state corrupted.
 * Adds are batched: chains are written at once, but become visible to the device, and
 * the device is told about them, only in publish().
 */
export interface VirtqueueDriver<T = unknown> {
  readonly layout: RingLayout;
  /** Which queue ("vsock tx"), in every error. */
  readonly name: string;
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly desc: RingPart;
  readonly avail: RingPart;
  readonly used: RingPart;
  /** Set when the device broke the ring protocol; every later call throws it. */
  readonly broken: VirtqueueError | null;
  /** Free descriptors (a chain of n buffers needs n; an indirect chain needs 1). */
  readonly numFree: number;
  /** Descriptors of chains committed and not yet returned by the device. */
  readonly outstanding: number;

  /** Zeroes the rings and the bookkeeping (queue setup and device reset). */
  resetRings(): void;
  /** Starts a chain (drops one being built and not committed). */
  chainBegin(): void;
  /** Appends one buffer. Device-readable buffers come before writable ones (2.7.4.2, 2.8.17). */
  chainAdd(addr: number, length: number, writable: boolean): void;
  /**
   * Appends a descriptor pointing at an indirect table of `count` entries the caller
   * wrote with writeIndirectEntry (2.7.5.3, 2.8.7): on a split ring as the last
   * descriptor of a chain, on a packed ring as its only one. `writableBytes` is what
   * the table's device-writable entries hold (the most the device may say it wrote).
   */
  chainAddIndirect(tableAddr: number, count: number, writableBytes?: number): void;
  /** Writes entry `i` of an indirect table of `count` entries in this queue's layout. */
  writeIndirectEntry(table: DataView, i: number, count: number, addr: number, length: number, writable: boolean): void;
  /** Commits the chain with its token (not yet visible: see publish). Returns its id (head index or buffer id). */
  chainCommit(token: T): number;
  /** Drops a chain being built, returning its descriptors. */
  chainAbort(): void;
  /** Convenience (allocates): one chain from [addr, len] lists. Returns its id. */
  add(token: T, readable: ReadonlyArray<readonly [number, number]>, writable?: ReadonlyArray<readonly [number, number]>): number;
  /** Makes committed chains visible and says whether the device wants a notification. */
  publish(): boolean;
  /** True when the device has returned chains not yet collected. */
  hasUsed(): boolean;
  /**
   * Collects used chains, calling `onUsed(token, writtenLength)` for each, and frees
   * their descriptors; validates every id and length. Returns the number collected.
   */
  drainUsed(onUsed: UsedCallback<T>, max?: number): number;
  /** Asks the device not to interrupt (a hint). */
  disableInterrupts(): void;
  /** Re-enables interrupts; true when used chains arrived meanwhile (drain again). */
  enableInterrupts(): boolean;
  /** Re-enables interrupts for when about 3/4 of the outstanding chains are used; true when that many are used already. */
  enableInterruptsDelayed(): boolean;
  /** The token of an outstanding chain by its id (diagnostics, tests, failing every request). */
  tokenOf(id: number): T | undefined;
  /** A number that changes whenever the device returns chains (polling interrupt sources watch it). */
  usedProgress(): number;
}

/** VirtqueueDriver.add for either layout (allocates): one chain from [addr, len] lists, readable ones first. Returns its id. */
export function addChain<T>(q: VirtqueueDriver<T>, token: T, readable: ReadonlyArray<readonly [number, number]>, writable: ReadonlyArray<readonly [number, number]>): number {
  if (readable.length + writable.length > q.numFree) {
    throw new VirtqueueError('ERR_VIRTQ_FULL', q.name, `chain of ${readable.length + writable.length} needs more than ${q.numFree} free descriptors`);
  }
  q.chainBegin();
  for (const [a, l] of readable) q.chainAdd(a, l, false);
  for (const [a, l] of writable) q.chainAdd(a, l, true);
  return q.chainCommit(token);
}

export interface DeviceQueueOptions {
  name: string;
  index: number;
  size: number;
  memory: GuestMemory;
  /** Guest addresses of the Descriptor, Driver and Device Areas (see the top of this file). */
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** VIRTIO_F_IN_ORDER negotiated (packed only: chains are pushed in the order taken). */
  inOrder?: boolean;
  /** Where refused chains are reported (default: ignored, but counted). */
  onError?: (err: VirtqueueError) => void;
  /** Ring state to start from (vhost-user SET_VRING_BASE, encoded as `vringBase`); default: a fresh ring. */
  startIndex?: number;
}

export interface DeviceQueueStats {
  chains: number;
  refused: number;
  notificationsSent: number;
  notificationsSuppressed: number;
}

/**
 * The device half: take available chains (walked and checked: guest memory is
 * hostile), push them back used, and decide when the driver wants an interrupt. A bad
 * chain is refused with a VirtqueueError naming the queue and the descriptor and the
 * queue goes on; a ring the device can no longer follow is marked broken.
 */
export interface VirtqueueDevice {
  readonly layout: RingLayout;
  readonly name: string;
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly memory: GuestMemory;
  readonly stats: DeviceQueueStats;
  onError: (err: VirtqueueError) => void;
  /** Set when the ring can no longer be followed; take() then returns null until a reset. */
  readonly broken: VirtqueueError | null;
  /**
   * The ring state for vhost-user GET_VRING_BASE: split, the next avail index; packed,
   * the next avail position with its wrap counter in bit 15, and the next used position
   * with its wrap counter in bits 16-31 (as QEMU stores it).
   */
  readonly vringBase: number;
  /** Chains taken and not yet pushed. */
  readonly heldChains: number;
  /** True when the driver has made chains available that were not taken yet. */
  hasAvailable(): boolean;
  /** The next valid available chain, or null when there is none. */
  take(): DescriptorChain | null;
  /** Returns a taken chain with the bytes written into it (visible after flush()). */
  push(chain: DescriptorChain, writtenLength: number): void;
  /** Publishes pushed chains and says whether the driver wants an interrupt. */
  flush(): boolean;
  /** Asks the driver not to kick (a hint). */
  disableNotifications(): void;
  /** Asks for a kick on the next available chain; true when chains arrived meanwhile (take them). */
  enableNotifications(): boolean;
  /** With EVENT_IDX, keeps the kick event at the next chain while notifications are enabled. */
  updateAvailEvent(): void;
}
