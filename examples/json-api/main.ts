// A JSON API written with node:http, served over vsock by tsvirtio's runtime:
//
//   npx tsvirtio run examples/json-api --forward 8080=80
//   curl -s localhost:8080/api/items -d '{"name":"tea"}'
//
// Routes: GET /api/health, GET /api/items, POST /api/items {"name"}, GET and DELETE
// /api/items/ID, POST /api/shutdown {"status"} (the program returns that status from
// main, after the reply went out, and `tsvirtio run` exits with it). Items live in memory.
import http from 'node:http';
import { cid, serve, txMode } from 'tsvirtio/guest';

const PORT = 80;

interface Item {
  id: number;
  name: string;
  created: string;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const items = new Map<number, Item>();
let nextId = 1;
const started = Date.now();

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw new HttpError(413, 'body larger than 64 KiB');
    chunks.push(chunk);
  }
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    return value as Record<string, unknown>;
  } catch (e) {
    throw new HttpError(400, `body is not a JSON object: ${(e as Error).message}`);
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

/** Resolves with the status asked for by POST /api/shutdown. */
let requestShutdown: (status: number) => void = () => {};
const shutdownRequested = new Promise<number>((resolve) => (requestShutdown = resolve));

async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://guest');
  const item = /^\/api\/items\/(\d+)$/.exec(url.pathname);
  if (url.pathname === '/api/health' && req.method === 'GET') {
    return send(res, 200, { status: 'ok', uptimeMs: Date.now() - started, items: items.size, cid: cid(), txMode: txMode() });
  }
  if (url.pathname === '/api/items' && req.method === 'GET') return send(res, 200, [...items.values()]);
  if (url.pathname === '/api/items' && req.method === 'POST') {
    const { name } = await readJson(req);
    if (typeof name !== 'string' || name === '') throw new HttpError(400, '"name" must be a non-empty string');
    const created: Item = { id: nextId++, name, created: new Date().toISOString() };
    items.set(created.id, created);
    res.setHeader('location', `/api/items/${created.id}`);
    return send(res, 201, created);
  }
  if (item && (req.method === 'GET' || req.method === 'DELETE')) {
    const found = items.get(Number(item[1]));
    if (!found) throw new HttpError(404, `no item ${item[1]}`);
    if (req.method === 'DELETE') items.delete(found.id);
    return send(res, 200, found);
  }
  if (url.pathname === '/api/shutdown' && req.method === 'POST') {
    const { status = 0 } = await readJson(req);
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 0 || status > 255) throw new HttpError(400, '"status" must be 0..255');
    res.setHeader('connection', 'close');
    send(res, 202, { stopping: true, status });
    requestShutdown(status);
    return;
  }
  throw new HttpError(404, `no route ${req.method} ${url.pathname}`);
}

// The program's main: its return value is the exit status.
export default async function main(): Promise<number> {
  const server = http.createServer((req, res) => {
    route(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      send(res, status, { error: (e as Error).message });
    });
  });
  // node:http cannot bind vsock itself: serve() hands it our vsock server's connections.
  const vsock = serve(server, PORT, () => console.log(`json-api: listening on vsock port ${PORT}`));
  const status = await shutdownRequested;
  // Stop accepting; 'close' once the last connection (the shutdown reply's) has closed.
  await new Promise<void>((resolve) => {
    vsock.once('close', resolve);
    server.close();
  });
  console.log(`json-api: stopped, exit status ${status}`);
  return status;
}
