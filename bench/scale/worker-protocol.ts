// Messages between the scale bench (coordinator) and its load processes (worker.ts),
// over the child-process IPC channel: a request with a sequence number, one reply each.
import type { ConnectionCounters, GeneratorOptions, PacingOptions, VmPlan } from './load-generator.js';
import type { ConnectionOutcome, SendMode } from './checked-connection.js';

/** How a simulated guest misbehaves (the bench's bad-input phase). */
export type Misbehaviour =
  /** Stops consuming: interrupts are ignored, used rx buffers are never taken back nor refilled. */
  | 'stop-consuming'
  /** Rings the tx doorbell in a loop. */
  | 'kick-storm'
  /** Sends its memory table again and again under load. */
  | 'remap-memory'
  /** Leaves in the middle of its transfers (front-end socket closed). */
  | 'vanish';

export type WorkerRequest =
  | { op: 'init'; options: GeneratorOptions }
  | { op: 'attach'; plans: VmPlan[] }
  | { op: 'open'; cids: number[]; perVm: number }
  | { op: 'mode'; cids: number[]; mode: SendMode }
  | { op: 'pacing'; pacing: PacingOptions }
  | { op: 'counters' }
  | { op: 'finish'; cids: number[]; timeoutMs: number }
  | { op: 'detach'; cids: number[]; how: 'orderly' | 'vanish' }
  | { op: 'drop-closed'; cids: number[] }
  | { op: 'misbehave'; cid: number; what: Misbehaviour; on: boolean }
  | { op: 'ping-open'; cid: number; size: number }
  | { op: 'ping'; ms: number }
  | { op: 'usage' }
  | { op: 'exit' };

export interface FinishSummary {
  connections: number;
  /** Connections that never opened (counted apart: no stream to check). */
  neverOpened: number;
  ok: number;
  /** Bytes checked (sent and received, SHA-256 equal) each way. */
  hostToGuestBytes: number;
  guestToHostBytes: number;
  /** Connections with a problem (lost, corrupted, reset, no end), at most 50 of them. */
  failed: ConnectionOutcome[];
  failedCount: number;
  stuck: ConnectionOutcome[];
  stuckCount: number;
}

export interface ProcessUsage {
  /** CPU seconds (user + system) since the process started. */
  cpuSeconds: number;
  rssBytes: number;
}

export interface WorkerReplies {
  init: null;
  attach: null;
  open: { opened: number; failed: string[] };
  mode: null;
  pacing: null;
  counters: ConnectionCounters[];
  finish: FinishSummary;
  detach: null;
  'drop-closed': number;
  misbehave: { stormKicks: number; remaps: number };
  'ping-open': null;
  ping: number[];
  usage: ProcessUsage;
  exit: null;
}

export type WorkerMessage = { seq: number; request: WorkerRequest };
export type WorkerReply = { seq: number; ok: true; result: unknown } | { seq: number; ok: false; error: string };
