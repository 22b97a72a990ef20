// The messages between the daemon's main thread (threaded-daemon.ts) and a VM thread
// (vm-thread.ts). Plain data only: they cross threads by structured clone.
import type { FrontEndEvent } from './daemon.js';
import type { CaptureMetricsSource, LoopFigures, VmMetricsSource } from './metrics.js';
import type { DaemonConfig } from './settings.js';

/** workerData of a VM thread. */
export interface VmThreadData {
  name: string;
  config: DaemonConfig;
  /** Sample this thread's event-loop delay (when the daemon serves metrics). */
  sampleLoop: boolean;
  /** Pass front-end events on (DaemonDeps.onFrontEnd). */
  frontEndEvents: boolean;
}

/** close: the thread closes its VMs, then its port, and ends. */
export type ToVmThread = { op: 'metrics'; id: number } | { op: 'close' };

export type FromVmThread =
  | { type: 'log'; line: string }
  /** Up: every VM's vhost-user socket, hybrid socket and forward listen; the forwards' bound addresses, in this thread's config order. */
  | { type: 'ready'; forwards: BoundAddress[] }
  | { type: 'failed'; message: string; code?: string }
  | { type: 'metrics'; id: number; vms: VmMetricsSource[]; captures: CaptureMetricsSource[]; loop: LoopFigures }
  | { type: 'front-end'; cid: number; event: FrontEndEvent };

export interface BoundAddress {
  address: string;
  port: number;
}

export type MetricsReply = Extract<FromVmThread, { type: 'metrics' }>;
