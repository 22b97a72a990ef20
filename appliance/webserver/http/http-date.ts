// The Date header value (RFC 9110 5.6.7, IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"),
// made at most once a second.
//
// Formatted with integer arithmetic, not Date.prototype.toUTCString: V8's first Date
// formatting sets up its time-zone cache through ICU (1.9 ms natively on the host, about
// 100 ms in a cold guest under TCG), and the first response of a freshly booted
// appliance paid for it.

const DAYS = ['Thu', 'Fri', 'Sat', 'Sun', 'Mon', 'Tue', 'Wed']; // 1970-01-01 was a Thursday
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

let cachedSecond = Number.NaN;
let cachedValue = '';

const two = (n: number): string => (n < 10 ? `0${n}` : `${n}`);

/**
 * The proleptic Gregorian civil date of a day count since 1970-01-01 (Howard Hinnant's
 * days-to-civil algorithm: eras of 400 years, years starting in March).
 */
export function civilFromDays(days: number): { year: number; month: number; day: number } {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097; // [0, 146096]
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365); // [0, 399]
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100)); // [0, 365]
  const mp = Math.floor((5 * doy + 2) / 153); // [0, 11], March = 0
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9; // 1..12
  return { year: yoe + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

/** IMF-fixdate of a time in milliseconds since the epoch (years 0..9999). */
export function formatHttpDate(ms: number): string {
  const second = Math.floor(ms / 1000);
  const days = Math.floor(second / 86400);
  const s = second - days * 86400;
  const { year, month, day } = civilFromDays(days);
  const wd = DAYS[((days % 7) + 7) % 7]!;
  return `${wd}, ${two(day)} ${MONTHS[month - 1]!} ${String(year).padStart(4, '0')} ${two(Math.floor(s / 3600))}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)} GMT`;
}

export function httpDate(nowMs: number = Date.now()): string {
  const second = Math.floor(nowMs / 1000);
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedValue = formatHttpDate(second * 1000);
  }
  return cachedValue;
}
