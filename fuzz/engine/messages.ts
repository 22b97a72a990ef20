// What the executor (a worker thread) and its campaign (the main thread) tell each other.
import type { CoverageSummary } from './coverage.js';

export type FailureKind = 'crash' | 'invariant' | 'hang';

export interface ExecutorData {
  target: string;
  repoRoot: string;
  /** Root of the instrumented tree (or dist/ for a plain replay). */
  codeRoot: string;
  deadline: number;
  seed: number;
  /** Shared with the campaign: [0] executions (Atomics), [1] input length; input bytes from HEARTBEAT_INPUT_OFFSET. */
  heartbeat: SharedArrayBuffer;
  /** 'fuzz': replay, then mutate until the deadline; 'merge': replay everything smallest first and report the inputs that add coverage. */
  mode: 'fuzz' | 'merge';
}

export const HEARTBEAT_INPUT_OFFSET = 16;

export type ExecutorMessage =
  | { type: 'input'; bytes: Uint8Array }
  | { type: 'keep'; bytes: Uint8Array }
  | { type: 'failure'; kind: FailureKind; bytes: Uint8Array; message: string; signature: string }
  | { type: 'progress'; execs: number; corpus: number; features: number }
  | { type: 'done'; execs: number; corpus: number; features: number; countersHit: number; focus: CoverageSummary & { files: string[] }; replayed: number };
