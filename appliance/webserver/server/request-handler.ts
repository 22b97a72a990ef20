// Answers one request: method check, path decoding, stat, directory index or
// redirect, then the file. Resolves the status sent.
import { sendFile } from '../files/file-response.js';
import { HttpError } from '../http/http-error.js';
import type { HttpRequest } from '../http/http-request.js';
import { decodeRequestPath } from '../files/request-path.js';
import { responseHead } from '../http/response-head.js';
import type { ServerContext } from './server-context.js';
import type { SocketOutput } from '../http/socket-output.js';
import { statusText } from '../http/status-text.js';

const ALLOW = 'Allow: GET, HEAD';

export async function handleRequest(ctx: ServerContext, out: SocketOutput, req: HttpRequest): Promise<number> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return sendSimple(out, req, 405, `method ${req.method} is not allowed`, [ALLOW]);
  }
  let path: string;
  try {
    path = decodeRequestPath(req.rawPath);
  } catch (err) {
    if (err instanceof HttpError) return sendSimple(out, req, err.status, err.message);
    throw err;
  }
  const files = ctx.files;
  const dirPath = path.endsWith('/');
  const st = await files.stat(dirPath && path.length > 1 ? path.slice(0, -1) : path);
  if (st === null || st.kind === 'other') return sendSimple(out, req, 404, `${path} was not found`);
  if (st.kind === 'directory') {
    if (!dirPath) {
      // As common servers do: /dir -> /dir/, so relative links in its index resolve.
      const location = req.rawPath + '/' + (req.query ? '?' + req.query : '');
      return sendSimple(out, req, 301, `moved to ${location}`, [`Location: ${location}`]);
    }
    const index = path + 'index.html';
    const ist = await files.stat(index);
    if (ist === null || ist.kind !== 'file') return sendSimple(out, req, 404, `${path} has no index.html`);
    await sendFile(ctx, out, req, index, ist);
    return 200;
  }
  if (dirPath) return sendSimple(out, req, 404, `${path} was not found (not a directory)`);
  await sendFile(ctx, out, req, path, st);
  return 200;
}

/**
 * A short text/plain response (errors, redirects) in one write. `req` null: the
 * request could not be parsed; the connection is closed after the response.
 */
export function sendSimple(out: SocketOutput, req: HttpRequest | null, status: number, message: string, extra?: readonly string[], forceClose = false): number {
  const body = `${status} ${statusText(status)}: ${message}\n`;
  const bodyBytes = Buffer.byteLength(body);
  const close = forceClose || req === null || !req.keepAlive;
  const head = responseHead({
    status,
    contentLength: bodyBytes,
    contentType: 'text/plain; charset=utf-8',
    extra,
    close,
    keepAlive10: !close && req !== null && req.minorVersion === 0,
  });
  const withBody = req === null || req.method !== 'HEAD';
  const buf = Buffer.allocUnsafe(head.length + (withBody ? bodyBytes : 0));
  buf.write(head, 0, 'latin1');
  if (withBody) buf.write(body, head.length, 'utf8');
  out.write(buf);
  return status;
}
