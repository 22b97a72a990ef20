// A test file whose tests all passed but whose process does not exit keeps ava waiting
// until its 15-minute timeout, which then says only "Failed to exit when running <file>".
// This prints, once the file has lingered that long after its last hook, what still holds
// its event loop: child processes (with their command lines), sockets and servers (with
// their addresses), timers. The timer is unref'd: a file that exits is not held by it.
import test from 'ava';

/** How long after the last hook a test file may still be running before the report. */
const LINGER_REPORT_MS = 60_000;

interface HandleLike {
  constructor: { name: string };
  pid?: number;
  spawnargs?: string[];
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
  address?: () => unknown;
  _pipeName?: string;
}

/** One line per live handle, saying what it is. */
export function describeHandles(handles: readonly unknown[]): string[] {
  return handles.map((h) => {
    const o = h as HandleLike;
    const kind = o.constructor.name;
    if (o.spawnargs !== undefined) return `${kind} pid ${o.pid}: ${o.spawnargs.join(' ').slice(0, 300)}`;
    if (o.remoteAddress !== undefined || o.remotePort !== undefined) return `${kind} ${o.localAddress}:${o.localPort} -> ${o.remoteAddress}:${o.remotePort}`;
    if (o._pipeName !== undefined) return `${kind} ${o._pipeName}`;
    if (typeof o.address !== 'function') return kind;
    let address: unknown = null;
    try {
      address = o.address();
    } catch {
      /* not bound */
    }
    if (typeof address === 'string') return `${kind} listening on ${address}`;
    if (address !== null && typeof address === 'object' && Object.keys(address).length > 0) return `${kind} listening on ${JSON.stringify(address)}`;
    // A pipe: this process's own stdio, or a child's.
    return `${kind} (a pipe)`;
  });
}

/** Registers the report for the calling test file (call once, at its top level). */
export function reportLingering(file: string, afterMs = LINGER_REPORT_MS): void {
  test.after.always(() => {
    setTimeout(() => {
      const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
      const lines = [
        `${file}: still running ${afterMs / 1000} s after its last test; what holds it:`,
        `  resources: ${process.getActiveResourcesInfo().join(', ')}`,
        ...describeHandles(handles).map((l) => `  ${l}`),
      ];
      console.error(lines.join('\n'));
    }, afterMs).unref();
  });
}
