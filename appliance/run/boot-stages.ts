// The boot timeline of a guest, seen from the host: when QEMU was launched, when its
// vhost-user front end connected (QEMU has built the machine), and the guest's own stage
// markers (`tsvirtio-stage: <name> <seconds since the kernel started>`, printed by the
// init script and kernel/guest/boot.ts), placed on the host's clock.
//
// The guest's clock starts with its kernel. A marker reaches the host a little after the
// guest printed it (the serial line), so `arrival - guest time` is an upper bound of the
// moment the kernel started, on the host's clock; the smallest over all markers is the
// estimate used. Everything is in milliseconds since the launch.
//
// A VM that is stopped and goes on (a saved VM state, vm-snapshot.ts) has a guest clock
// that did not run while it was stopped, and a restored one's clock counts from a boot
// that happened elsewhere: the host starts a new guest epoch (newGuestEpoch()) when it
// lets the VM go on, and each epoch's markers are placed by their own estimate.

/** Guest stage markers, in boot order (init script, then kernel/guest/boot.ts and the program). */
export const GUEST_STAGES = ['init', 'exec', 'node-start', 'program-loaded', 'dma-ready', 'snapshot-ready', 'resumed', 'hotplugged', 'devices-ready', 'listening'] as const;
export type GuestStage = (typeof GUEST_STAGES)[number];

const MARKER_RE = /tsvirtio-stage: ([a-z0-9-]+) (\d+(?:\.\d+)?)\s*$/;

/** Parses a stage marker line; null for any other line (and for malformed markers). */
export function parseStageLine(line: string): { name: string; seconds: number } | null {
  const m = MARKER_RE.exec(line);
  if (!m) return null;
  const seconds = Number(m[2]);
  return Number.isFinite(seconds) ? { name: m[1]!, seconds } : null;
}

/** One step of the waterfall: what happened between the previous point and this one. */
export interface WaterfallStep {
  /** What the time went to, e.g. "kernel" (kernel start to init). */
  step: string;
  /** Where the step ends, ms since launch. */
  endMs: number;
  /** Its duration, ms. */
  ms: number;
}

/**
 * The points of the timeline, in order, and the name of the step that ends at each:
 * launch -> front end connected ("QEMU start") -> kernel entry ("firmware") -> init
 * ("kernel") -> node about to be exec'd ("init": mounts) -> node's process started
 * ("exec": loading node and its libraries) -> program loaded ("node start") -> DMA ready
 * ("DMA memory") -> devices ready ("devices") -> listening ("services") -> first HTTP
 * response on the host ("first response").
 */
export const WATERFALL_POINTS: ReadonlyArray<readonly [point: string, step: string]> = [
  ['front-end-connected', 'QEMU start'],
  ['kernel', 'firmware'],
  ['init', 'kernel'],
  ['exec', 'init'],
  ['node-start', 'exec'],
  ['program-loaded', 'node start'],
  ['dma-ready', 'DMA memory'],
  ['devices-ready', 'devices'],
  ['listening', 'services'],
  ['first-response', 'first response'],
];

/**
 * The first start of a restorable guest (vm-snapshot.ts): a cold boot to the snapshot
 * point, the state saved ("save state": host), then as a restored one goes on.
 */
export const SAVE_WATERFALL_POINTS: ReadonlyArray<readonly [point: string, step: string]> = [
  ...WATERFALL_POINTS.slice(0, WATERFALL_POINTS.findIndex(([p]) => p === 'devices-ready')),
  ['state-saved', 'save state'],
  ['resumed', 'resume'],
  ['hotplugged', 'hotplug'],
  ['devices-ready', 'devices'],
  ['listening', 'services'],
  ['first-response', 'first response'],
];

/**
 * A guest restored from a saved state: QEMU up (its QMP socket answers), the state loaded
 * ("restore"), the guest's resume line read and applied ("resume": clock, random bytes),
 * the first hotplugged device seen on PCI ("hotplug"), then as a cold boot.
 */
export const RESTORE_WATERFALL_POINTS: ReadonlyArray<readonly [point: string, step: string]> = [
  ['qemu-up', 'QEMU start'],
  ['state-loaded', 'restore'],
  ['resumed', 'resume'],
  ['hotplugged', 'hotplug'],
  ['devices-ready', 'devices'],
  ['listening', 'services'],
  ['first-response', 'first response'],
];

export class BootTimeline {
  private readonly launchedAt: number;
  private readonly host = new Map<string, number>();
  private readonly guest = new Map<string, { seconds: number; arrivalMs: number; epoch: number }>();
  private epoch = 0;
  private readonly steps: ReadonlyArray<readonly [point: string, step: string]>;

  /** `launchedAt`: performance.now() when QEMU was spawned; `steps`: the waterfall's points (WATERFALL_POINTS). */
  constructor(launchedAt = performance.now(), steps: ReadonlyArray<readonly [point: string, step: string]> = WATERFALL_POINTS) {
    this.launchedAt = launchedAt;
    this.steps = steps;
  }

  /** Later markers come from a guest clock that stopped (or was restored): placed on their own. */
  newGuestEpoch(): void {
    this.epoch++;
  }

  /** Records a host-side point (the first time only), now or at `at` (performance.now()). */
  markHost(point: string, at = performance.now()): void {
    if (!this.host.has(point)) this.host.set(point, at - this.launchedAt);
  }

  /** Feeds a console line; true when it was a stage marker. */
  onConsoleLine(line: string, at = performance.now()): boolean {
    const s = parseStageLine(line);
    if (s === null) return false;
    if (!this.guest.has(s.name)) this.guest.set(s.name, { seconds: s.seconds, arrivalMs: at - this.launchedAt, epoch: this.epoch });
    return true;
  }

  /** Where an epoch's guest clock reads 0, on the host's clock (ms since launch); null before its first marker. */
  private clockZeroMs(epoch: number): number | null {
    let best: number | null = null;
    for (const g of this.guest.values()) {
      if (g.epoch !== epoch) continue;
      const t = g.arrivalMs - g.seconds * 1000;
      if (best === null || t < best) best = t;
    }
    return best;
  }

  /** The kernel's start on the host's clock (ms since launch), or null before any guest marker of the first epoch. */
  kernelStartMs(): number | null {
    const zero = this.clockZeroMs(0);
    return zero === null ? null : Math.max(0, zero);
  }

  /** A point's time in ms since launch, or null if it has not happened. */
  at(point: string): number | null {
    const h = this.host.get(point);
    if (h !== undefined) return h;
    if (point === 'kernel') return this.kernelStartMs();
    const g = this.guest.get(point);
    if (g === undefined) return null;
    const zero = g.epoch === 0 ? this.kernelStartMs() : this.clockZeroMs(g.epoch);
    return zero === null ? null : zero + g.seconds * 1000;
  }

  /** Every point seen, ms since launch (for JSON). */
  points(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [p] of this.steps) {
      const t = this.at(p);
      if (t !== null) out[p] = Math.round(t * 10) / 10;
    }
    return out;
  }

  /** The steps whose end was seen, each from the latest earlier point seen. */
  waterfall(): WaterfallStep[] {
    const steps: WaterfallStep[] = [];
    let prev = 0;
    for (const [point, step] of this.steps) {
      const t = this.at(point);
      if (t === null) continue;
      steps.push({ step, endMs: t, ms: t - prev });
      prev = Math.max(prev, t);
    }
    return steps;
  }
}
