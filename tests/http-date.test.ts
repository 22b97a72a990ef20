// The Date header: integer formatting agrees with Date.prototype.toUTCString everywhere.
import test from 'ava';
import fc from 'fast-check';
import { civilFromDays, formatHttpDate, httpDate } from '../appliance/webserver/http/http-date.js';

test('known dates: the RFC example, the epoch, leap days and a century that is not a leap year', (t) => {
  t.is(formatHttpDate(Date.UTC(1994, 10, 6, 8, 49, 37)), 'Sun, 06 Nov 1994 08:49:37 GMT');
  t.is(formatHttpDate(0), 'Thu, 01 Jan 1970 00:00:00 GMT');
  t.is(formatHttpDate(Date.UTC(2000, 1, 29, 23, 59, 59)), 'Tue, 29 Feb 2000 23:59:59 GMT');
  t.is(formatHttpDate(Date.UTC(2100, 2, 1)), 'Mon, 01 Mar 2100 00:00:00 GMT');
  t.is(formatHttpDate(-1000), 'Wed, 31 Dec 1969 23:59:59 GMT');
  t.deepEqual(civilFromDays(-719468), { year: 0, month: 3, day: 1 });
});

test('property: the same text as toUTCString for any millisecond from year 0 to 9999', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: Date.UTC(0, 0, 1) + 0, max: Date.UTC(9999, 11, 31, 23, 59, 59, 999) }), (ms) => {
      const expected = new Date(ms).toUTCString().replace(/^(\w+, \d+ \w+ )(-?\d+)/, (_m, head: string, y: string) => `${head}${y.padStart(4, '0')}`);
      t.is(formatHttpDate(ms), expected);
    }),
    { numRuns: 20000 },
  );
});

test('httpDate caches per second and follows the clock', (t) => {
  const a = httpDate(Date.UTC(2026, 11, 5, 1, 2, 3, 100));
  t.is(a, 'Sat, 05 Dec 2026 01:02:03 GMT');
  t.is(httpDate(Date.UTC(2026, 11, 5, 1, 2, 3, 900)), a);
  t.is(httpDate(Date.UTC(2026, 11, 5, 1, 2, 4, 0)), 'Sat, 05 Dec 2026 01:02:04 GMT');
});
