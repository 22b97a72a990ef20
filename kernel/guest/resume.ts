// The snapshot point of a guest that is saved and restored (a VM snapshot: the host's
// appliance/run/vm-snapshot.ts). boot() calls waitForResume() once its DMA memory is
// ready when the kernel command line has tsvirtio.snapshot=1:
//   1. it prints the `snapshot-ready` stage: the host stops the VM and saves its state;
//   2. it blocks in a read of the console until the host writes the resume line
//      (resume-line.ts), in the saving VM once the state is written, in each restored one
//      once it runs again; a line that is not one is reported and the read goes on;
//   3. it sets the wall clock from the line, mixes its random bytes into the kernel's
//      generator and node's OpenSSL one, and prints the `resumed` stage.
// The devices come next, hotplugged on PCI (boot.ts waits for them): QEMU will not save or
// load a VM with a vhost-user device in it.
import { readSync } from 'node:fs';
import { reseedRandom, setRealtimeClock } from '../native/index.js';
import { type ResumeLine, ResumeLineError, parseResumeLine } from './resume-line.js';

export interface ResumeOptions {
  /** Reads bytes of the console into `buf` (default: a blocking read of fd 0); 0 at its end. */
  read?: (buf: Buffer) => number;
  /** Says what was wrong with a line that was not the resume line. */
  log: (message: string) => void;
  /** Applies the line (default: the wall clock and the random generators, through the addon). */
  apply?: (line: ResumeLine) => string;
}

/** Reads console lines until one is the resume line; applies it. Throws when the console ends first. */
export function waitForResume(opts: ResumeOptions): ResumeLine {
  const read = opts.read ?? ((buf: Buffer) => readSync(0, buf, 0, buf.length, null));
  const buf = Buffer.alloc(1024);
  let pending = '';
  let lineNo = 0;
  for (;;) {
    const nl = pending.indexOf('\n');
    if (nl < 0) {
      const n = read(buf);
      if (n === 0) throw new ResumeLineError(`the console ended before the resume line (after ${lineNo} other lines)`);
      pending += buf.toString('latin1', 0, n);
      // A line longer than any resume line is dropped, not kept growing.
      if (pending.length > 4096 && !pending.includes('\n')) pending = pending.slice(-1200);
      continue;
    }
    const line = pending.slice(0, nl).replace(/\r$/, '');
    pending = pending.slice(nl + 1);
    lineNo++;
    if (line.trim() === '') continue;
    try {
      const resume = parseResumeLine(line);
      const t0 = performance.now();
      const applied = (opts.apply ?? applyResume)(resume);
      opts.log(`resumed: ${applied} (in ${(performance.now() - t0).toFixed(1)} ms)`);
      return resume;
    } catch (e) {
      if (!(e instanceof ResumeLineError)) throw e;
      opts.log(`console line ${lineNo} ignored while waiting to resume: ${e.message}`);
    }
  }
}

/** Sets the wall clock and reseeds the random generators from the line; says what it did. */
export function applyResume(line: ResumeLine): string {
  const before = Date.now();
  setRealtimeClock(line.nowMs);
  const seeded = reseedRandom(line.entropy);
  const generators = [seeded.kernel ? 'kernel' : null, seeded.openssl ? 'OpenSSL' : null].filter(Boolean).join(' and ') || 'none';
  return `wall clock moved by ${((line.nowMs - before) / 1000).toFixed(1)} s; ${line.entropy.length} fresh random bytes for the ${generators} generator${generators.includes(' and ') ? 's' : ''}`;
}
