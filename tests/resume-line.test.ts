// The resume line of a restored guest (kernel/guest/resume-line.ts) and the guest's wait
// for it (kernel/guest/resume.ts), with a scripted console: what the host writes is what
// the guest reads back; anything else is refused with what is wrong and where, and the
// wait goes on; the console ending first is an error.
import test from 'ava';
import fc from 'fast-check';
import { RESUME_ENTROPY_BYTES, RESUME_PREFIX, type ResumeLine, ResumeLineError, formatResumeLine, parseResumeLine, snapshotRequested } from '../kernel/guest/resume-line.js';
import { waitForResume } from '../kernel/guest/resume.js';

test('property: a formatted line parses back to its time and bytes', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 253402300799999 }), fc.uint8Array({ minLength: RESUME_ENTROPY_BYTES, maxLength: 512 }), (now, bytes) => {
      const line = formatResumeLine(now, bytes);
      t.true(line.endsWith('\n'));
      const back = parseResumeLine(line.slice(0, -1));
      t.is(back.nowMs, now);
      t.deepEqual([...back.entropy], [...bytes]);
    }),
    { numRuns: 500 },
  );
});

test('lines that are not resume lines: each refused with what is wrong and where', (t) => {
  const hex = 'ab'.repeat(RESUME_ENTROPY_BYTES);
  const cases: Array<[string, RegExp]> = [
    ['go', /not a resume line: it must start with "tsvirtio-resume "/],
    [`${RESUME_PREFIX} 123`, /expected 3 fields .* got 2/],
    [`${RESUME_PREFIX} 1 ${hex} extra`, /expected 3 fields .* got 4/],
    [`${RESUME_PREFIX} -5 ${hex}`, /field 2 \(time\): expected ms since the epoch, got "-5"/],
    [`${RESUME_PREFIX} 1e9 ${hex}`, /field 2 \(time\)/],
    [`${RESUME_PREFIX} 253402300800000 ${hex}`, /field 2 \(time\)/],
    [`${RESUME_PREFIX} 1 ${hex}a`, /field 3 \(entropy\): expected hex bytes/],
    [`${RESUME_PREFIX} 1 ${'zz'.repeat(RESUME_ENTROPY_BYTES)}`, /field 3 \(entropy\): expected hex bytes/],
    [`${RESUME_PREFIX} 1 ${'ab'.repeat(RESUME_ENTROPY_BYTES - 1)}`, /field 3 \(entropy\): expected 32 to 512 bytes, got 31/],
    [`${RESUME_PREFIX} 1 ${'ab'.repeat(513)}`, /expected 32 to 512 bytes, got 513/],
  ];
  for (const [line, message] of cases) {
    const e = t.throws(() => parseResumeLine(line), { instanceOf: ResumeLineError }, line.slice(0, 40));
    t.is(e!.code, 'ERR_RESUME_LINE');
    t.regex(e!.message, message);
  }
  t.throws(() => formatResumeLine(1.5, new Uint8Array(32)), { instanceOf: RangeError });
  t.throws(() => formatResumeLine(1, new Uint8Array(8)), { instanceOf: RangeError });
});

test('snapshotRequested: the kernel parameter as a whole word only', (t) => {
  t.true(snapshotRequested('console=ttyS0 tsvirtio.snapshot=1 TSVIRTIO_ARG_0=--x\n'));
  t.false(snapshotRequested('console=ttyS0 tsvirtio.snapshot=10'));
  t.false(snapshotRequested('console=ttyS0 xtsvirtio.snapshot=1'));
  t.false(snapshotRequested(''));
});

/** A console that hands out `chunks` one read at a time, then ends. */
function consoleOf(chunks: readonly string[]): (buf: Buffer) => number {
  const queue = chunks.map((c) => Buffer.from(c, 'latin1'));
  return (buf) => {
    const next = queue.shift();
    if (next === undefined) return 0;
    if (next.length > buf.length) {
      queue.unshift(next.subarray(buf.length));
      return next.copy(buf, 0, 0, buf.length);
    }
    return next.copy(buf);
  };
}

test('waitForResume: other lines are reported and skipped; a line split over reads, CRLF, an overlong line', (t) => {
  const entropy = Buffer.alloc(RESUME_ENTROPY_BYTES, 7);
  const line = formatResumeLine(1_800_000_000_000, entropy);
  const logs: string[] = [];
  const applied: ResumeLine[] = [];
  const got = waitForResume({
    read: consoleOf(['\r\n', 'hello\n', 'x'.repeat(9000), '\n', `${RESUME_PREFIX} 12`, '\n', line.slice(0, 20), `${line.slice(20, -1)}\r\n`, 'after\n']),
    log: (m) => logs.push(m),
    apply: (r) => {
      applied.push(r);
      return 'applied';
    },
  });
  t.is(got.nowMs, 1_800_000_000_000);
  t.deepEqual([...got.entropy], [...entropy]);
  t.is(applied.length, 1);
  t.is(logs.length, 4, logs.join('\n'));
  t.regex(logs[0]!, /^console line 2 ignored while waiting to resume: not a resume line: .*"hello"/);
  t.regex(logs[1]!, /^console line 3 ignored .*"x{20,}/);
  t.regex(logs[2]!, /^console line 4 ignored .*expected 3 fields/);
  t.regex(logs[3]!, /^resumed: applied \(in [\d.]+ ms\)$/);
});

test('waitForResume: the console ending first is an error, after the lines it did see', (t) => {
  const e = t.throws(() => waitForResume({ read: consoleOf(['nope\n']), log: () => {}, apply: () => 'x' }), { instanceOf: ResumeLineError });
  t.regex(e!.message, /the console ended before the resume line \(after 1 other lines\)/);
});
