// Turns a request's raw path into a site path, or refuses it. Percent-decoding is
// done once, on bytes, then the bytes must be UTF-8 (RFC 3986 2.1, 2.5). Refused:
// bad escapes and invalid UTF-8 (400), NUL and control characters (400), and
// anything that could leave the site root or name one file two ways (403): '.' and
// '..' segments (raw or encoded), encoded '/' or '\', raw '\', empty segments ('//',
// which would make an absolute path).
import { HttpError } from '../http/http-error.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });
// Raw paths made only of these need no decoding or UTF-8 check.
const PLAIN_PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$/;

/** The decoded site path ('/', '/a/b.html', '/dir/'); throws HttpError when refused. */
export function decodeRequestPath(rawPath: string): string {
  if (!rawPath.startsWith('/')) throw new HttpError(400, 'path does not start with /', false);
  let path: string;
  if (PLAIN_PATH.test(rawPath)) {
    path = rawPath;
  } else {
    if (rawPath.includes('\\')) throw new HttpError(403, 'backslash in path', false);
    path = percentDecode(rawPath);
  }
  checkSegments(path);
  return path;
}

function percentDecode(raw: string): string {
  const bytes = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c !== 0x25) {
      bytes[n++] = c; // the parser allowed visible ASCII only
      continue;
    }
    const hi = hexValue(raw.charCodeAt(i + 1));
    const lo = hexValue(raw.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) throw new HttpError(400, `bad percent-escape at byte ${i} of the path`, false);
    const b = (hi << 4) | lo;
    if (b === 0) throw new HttpError(400, 'NUL in path', false);
    if (b < 0x20 || b === 0x7f) throw new HttpError(400, 'control character in path', false);
    if (b === 0x2f) throw new HttpError(403, 'encoded / in path', false);
    if (b === 0x5c) throw new HttpError(403, 'encoded backslash in path', false);
    bytes[n++] = b;
    i += 2;
  }
  try {
    return utf8.decode(bytes.subarray(0, n));
  } catch {
    throw new HttpError(400, 'path is not UTF-8 after percent-decoding', false);
  }
}

function checkSegments(path: string): void {
  // path starts with '/'; segments between slashes; a trailing '/' names a directory.
  let start = 1;
  while (start <= path.length) {
    let end = path.indexOf('/', start);
    if (end < 0) end = path.length;
    const seg = path.slice(start, end);
    if (seg === '.' || seg === '..') throw new HttpError(403, `'${seg}' segment in path`, false);
    if (seg.length === 0 && end < path.length) throw new HttpError(403, 'empty segment (//) in path', false);
    start = end + 1;
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}
