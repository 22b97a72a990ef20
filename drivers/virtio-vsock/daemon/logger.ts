// The daemon's log: one line per event, with its time, level and VM.
//
//   2026-11-24T03:49:16.290Z info  [cid 3] vhost-user at /tmp/vhost.sock, hybrid vsock at /tmp/vm.vsock
//   2026-11-24T03:49:16.291Z warn  [daemon] metrics at http://0.0.0.0:9100/metrics: not a loopback address
//
// Lines below the chosen level are not formatted at all (callers on busy paths ask
// enabled() first). Levels, most severe first: error, warn, info, debug.

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function isLogLevel(s: unknown): s is LogLevel {
  return typeof s === 'string' && (LOG_LEVELS as readonly string[]).includes(s);
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export interface DaemonLogger {
  readonly level: LogLevel;
  /** True when lines of `level` are written. */
  enabled(level: LogLevel): boolean;
  /** One line about VM `cid` (null: the daemon as a whole). */
  log(level: LogLevel, cid: number | null, message: string): void;
}

/** A logger writing lines at `level` and above to `write` (one call per line, without the newline). */
export function createLogger(level: LogLevel, write: (line: string) => void, now: () => Date = () => new Date()): DaemonLogger {
  const max = RANK[level];
  return {
    level,
    enabled: (l) => RANK[l] <= max,
    log(l, cid, message) {
      if (RANK[l] > max) return;
      write(`${now().toISOString()} ${l.padEnd(5)} [${cid === null ? 'daemon' : `cid ${cid}`}] ${message}`);
    },
  };
}
