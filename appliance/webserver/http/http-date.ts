// The Date header value (RFC 9110 5.6.7, IMF-fixdate), made at most once a second.

let cachedSecond = -1;
let cachedValue = '';

export function httpDate(nowMs: number = Date.now()): string {
  const second = Math.floor(nowMs / 1000);
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedValue = new Date(second * 1000).toUTCString();
  }
  return cachedValue;
}
