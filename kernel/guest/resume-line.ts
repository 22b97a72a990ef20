// The line a host writes to the console of a guest restored from a saved VM state
// (appliance/run/vm-snapshot.ts), and the guest reads before it goes on
// (kernel/guest/resume.ts):
//
//   tsvirtio-resume <host time, ms since the epoch> <32 to 512 random bytes, hex>
//
// The guest's wall clock still reads the moment the state was saved, and every guest
// restored from one state starts with the same random state: the line carries the time
// and fresh bytes. Both sides use this codec.

export const RESUME_PREFIX = 'tsvirtio-resume';
/** The kernel parameter that makes boot() stop at its snapshot point and wait for the line. */
export const SNAPSHOT_KERNEL_PARAM = 'tsvirtio.snapshot=1';
/** Random bytes the host sends (and the least the guest takes). */
export const RESUME_ENTROPY_BYTES = 32;
const MAX_ENTROPY_BYTES = 512;
/** The latest time the line may carry: 9999-12-31 (the addon's setRealtimeClock limit). */
const MAX_TIME_MS = 253402300799999;

export interface ResumeLine {
  /** The host's time, ms since the epoch. */
  nowMs: number;
  /** Fresh random bytes from the host. */
  entropy: Buffer;
}

/** Why a line is not a resume line: `what` says what is wrong and where. */
export class ResumeLineError extends Error {
  readonly code = 'ERR_RESUME_LINE';
  constructor(what: string) {
    super(what);
    this.name = 'ResumeLineError';
  }
}

/** The resume line for `nowMs` and `entropy`, with its newline. */
export function formatResumeLine(nowMs: number, entropy: Uint8Array): string {
  if (!Number.isInteger(nowMs) || nowMs < 0 || nowMs > MAX_TIME_MS) throw new RangeError(`resume line: the time must be an integer ms since the epoch, got ${nowMs}`);
  if (entropy.length < RESUME_ENTROPY_BYTES || entropy.length > MAX_ENTROPY_BYTES) throw new RangeError(`resume line: ${RESUME_ENTROPY_BYTES} to ${MAX_ENTROPY_BYTES} random bytes, got ${entropy.length}`);
  return `${RESUME_PREFIX} ${nowMs} ${Buffer.from(entropy.buffer, entropy.byteOffset, entropy.byteLength).toString('hex')}\n`;
}

/** Parses a resume line (without its newline; surrounding blanks ignored); throws ResumeLineError. */
export function parseResumeLine(line: string): ResumeLine {
  const fields = line.trim().split(/\s+/);
  if (fields[0] !== RESUME_PREFIX) throw new ResumeLineError(`not a resume line: it must start with "${RESUME_PREFIX} ", got ${JSON.stringify(line.slice(0, 40))}`);
  if (fields.length !== 3) throw new ResumeLineError(`resume line: expected 3 fields (${RESUME_PREFIX} TIME ENTROPY), got ${fields.length}`);
  const [, time, hex] = fields as [string, string, string];
  if (!/^\d{1,15}$/.test(time) || Number(time) > MAX_TIME_MS) throw new ResumeLineError(`resume line, field 2 (time): expected ms since the epoch, got ${JSON.stringify(time.slice(0, 20))}`);
  if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new ResumeLineError(`resume line, field 3 (entropy): expected hex bytes, got ${JSON.stringify(hex.slice(0, 20))}`);
  const bytes = hex.length / 2;
  if (bytes < RESUME_ENTROPY_BYTES || bytes > MAX_ENTROPY_BYTES) throw new ResumeLineError(`resume line, field 3 (entropy): expected ${RESUME_ENTROPY_BYTES} to ${MAX_ENTROPY_BYTES} bytes, got ${bytes}`);
  return { nowMs: Number(time), entropy: Buffer.from(hex, 'hex') };
}

/** True when the kernel command line asks for a snapshot point (SNAPSHOT_KERNEL_PARAM as a whole word). */
export function snapshotRequested(cmdline: string): boolean {
  return cmdline.trim().split(/\s+/).includes(SNAPSHOT_KERNEL_PARAM);
}
