// Builds a response head (status line and header fields) as one latin1 string, to be
// written in the same buffer or the same writev as the body.
import { httpDate } from './http-date.js';
import { statusText } from './status-text.js';

export const SERVER_NAME = 'tsvirtio-webserver';

export interface ResponseHeadFields {
  status: number;
  contentLength: number;
  contentType?: string;
  /** Extra fields, each 'Name: value' (ASCII only). */
  extra?: readonly string[];
  /** The connection closes after this response. */
  close: boolean;
  /** The request was HTTP/1.0 with keep-alive: say so. */
  keepAlive10: boolean;
}

export function responseHead(f: ResponseHeadFields): string {
  let s = `HTTP/1.1 ${f.status} ${statusText(f.status)}\r\nServer: ${SERVER_NAME}\r\nDate: ${httpDate()}\r\n`;
  if (f.contentType !== undefined) s += `Content-Type: ${f.contentType}\r\n`;
  s += `Content-Length: ${f.contentLength}\r\n`;
  if (f.extra) for (const e of f.extra) s += e + '\r\n';
  if (f.close) s += 'Connection: close\r\n';
  else if (f.keepAlive10) s += 'Connection: keep-alive\r\n';
  return s + '\r\n';
}
