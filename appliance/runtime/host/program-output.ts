// Which console lines of a runtime guest are the program's output: every line after the
// runtime's `program-start` stage marker, except the runtime's own (boot()'s log lines,
// "tsvirtio-runtime: ...") and the stage markers, up to the exit marker
// ("tsvirtio-exit: N", printed by init when node has ended; the kernel's reboot follows).
import { EXIT_MARKER, STAGE_MARKER } from '../../image/node-guest.js';
import { PROGRAM_START_STAGE, RUNTIME_NAME } from '../launcher-args.js';

const RUNTIME_LINE_PREFIX = `${RUNTIME_NAME}: `;
/** The console line the host waits for before the program's first line. */
export const PROGRAM_START_LINE = `${STAGE_MARKER} ${PROGRAM_START_STAGE} `;

/** A filter for console lines: returns the program's lines, null for the others. */
export function programOutputFilter(): (line: string) => string | null {
  let started = false;
  let ended = false;
  return (line) => {
    if (ended) return null;
    const exit = line.indexOf(EXIT_MARKER);
    if (exit >= 0) {
      ended = true;
      // A last line without a newline shares its line with the marker.
      return started && exit > 0 ? line.slice(0, exit) : null;
    }
    if (line.startsWith(STAGE_MARKER)) {
      if (line.startsWith(PROGRAM_START_LINE)) started = true;
      return null;
    }
    if (!started || line.startsWith(RUNTIME_LINE_PREFIX)) return null;
    return line;
  };
}
