// The daemon's settings (what --vm, --forward, --config and the other flags produce),
// and the few rules the command line and the config file share.
import type { LogLevel } from './logger.js';
import { ValueError, decimal, isLoopback } from './validate.js';

export interface VmConfig {
  /** The guest's CID (3 .. 4294967294). */
  guestCid: number;
  /** Unix socket where QEMU connects (vhost-user). */
  socketPath: string;
  /** Hybrid vsock Unix socket (Firecracker convention), or null for none. */
  udsPath: string | null;
  /** Capture file of this VM alone (instead of the daemon's --pcap). */
  pcapPath?: string;
  /** Largest ring size offered to the driver (queue-size; default 256). */
  maxQueueSize?: number;
  /** Sibling groups (group= / groups=): guests sharing one reach each other's CIDs. None: the host only. */
  groups?: string[];
}

export interface ForwardConfig {
  /** Host address to listen on (IPv4, IPv6 without brackets, or a host name). */
  listenHost: string;
  listenPort: number;
  guestCid: number;
  guestPort: number;
}

export interface MetricsConfig {
  host: string;
  /** 0 picks a free port (the daemon logs the one it got). */
  port: number;
  /** A non-loopback host was explicitly allowed (--metrics-allow-remote). */
  allowRemote: boolean;
}

export interface DaemonConfig {
  vms: VmConfig[];
  forwards: ForwardConfig[];
  /** Default 'info'. */
  logLevel?: LogLevel;
  /** Prometheus metrics over HTTP at /metrics. */
  metrics?: MetricsConfig;
  /** Capture of every VM without a capture file of its own. */
  pcapPath?: string;
  /** Payload bytes kept per captured packet (default: all, up to 262068). */
  pcapSnaplen?: number;
  /** Ring layouts offered: auto (default) offers packed beside split, split offers split only. */
  ring?: RingOffer;
  /** Settings accepted for compatibility but without effect, logged at start (warn). */
  notices?: string[];
  /** Where the VMs run (default 0: all on the main thread; see ThreadsSetting). */
  threads?: ThreadsSetting;
}

/**
 * Where the VMs run: 0 (the default), every VM on the main thread's event loop; 'per-vm',
 * each VM on an event loop of its own (a worker thread; VMs that share a sibling group or
 * a capture file share one); or a number N, at most N such threads with the VMs spread
 * over them. More threads let the daemon use more than one CPU; each costs about 12 MB
 * (a V8 heap of its own). One VM, or VMs that must all share one loop, run on the main
 * thread whatever the setting.
 */
export type ThreadsSetting = 'per-vm' | number;
export const THREADS_MAX = 1024;

/** --threads / threads: 'per-vm' or 0..THREADS_MAX. */
export function threadsSetting(text: string, what: string): ThreadsSetting {
  if (text === 'per-vm') return 'per-vm';
  if (!/^\d+$/.test(text)) throw new ValueError(`${what} ${JSON.stringify(text)} is neither per-vm nor a number of threads (0..${THREADS_MAX})`);
  return decimal(text, what, 0, THREADS_MAX);
}

/** What the device offers: the packed ring layout beside the split one (auto), or split only. */
export type RingOffer = 'auto' | 'split';
export const RING_OFFERS: readonly RingOffer[] = ['auto', 'split'];
export const isRingOffer = (s: string): s is RingOffer => (RING_OFFERS as readonly string[]).includes(s);

export const METRICS_PORT_DEFAULT_HOST = '127.0.0.1';

/** The log notice for a vhost-device-vsock setting accepted without effect here (tx buffer size). */
export function ignoredSettingNotice(cidNumber: number, key: string, value: string): string {
  return `guest CID ${cidNumber}: ${key} ${value} has no effect here: each connection's window is 256 KiB (buf_alloc)`;
}

/** Refuses a metrics host other machines can reach unless allowed. */
export function checkMetricsHost(m: MetricsConfig, where: string): void {
  if (!m.allowRemote && !isLoopback(m.host)) {
    throw new ValueError(
      `${m.host} is not a loopback address: anyone who can reach it could read the metrics (they have no access control); ` +
        `use 127.0.0.1 or [::1], or allow it explicitly with ${where}`,
    );
  }
}
