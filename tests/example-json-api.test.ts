// examples/json-api under QEMU, one boot on microvm: `tsvirtio run examples/json-api
// --forward 127.0.0.1:0=80` (the folder: its main.ts) serves its node:http JSON API
// over our vsock server through the daemon's TCP forward; POST /api/shutdown makes main()
// return a status, and the command exits with it, QEMU gone.
import test from 'ava';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { qemuAvailable } from '../appliance/qemu/launch.js';
import { type RunningCommand, ROOT, alive, spawnTsvirtio } from './support/tsvirtio-run.js';

const runnable = existsSync(`${ROOT}dist/bundles/runtime.js`) && qemuAvailable();
const serial = runnable ? test.serial : test.serial.skip;

let cmd: RunningCommand | null = null;
let started: Promise<number> | null = null;

/** Boots the example once; resolves with the forward's host port. */
function start(): Promise<number> {
  started ??= (async () => {
    cmd = spawnTsvirtio(['run', 'examples/json-api', '--forward', '127.0.0.1:0=80', '--verbose']);
    await cmd.waitFor(/program started .* \(Ctrl-C stops\)/, 'stderr');
    await cmd.waitFor(/^json-api: listening on vsock port 80$/m);
    return cmd.forwardPorts()[0]!;
  })();
  return started;
}

test.after.always(async () => {
  await cmd?.stop();
});

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: unknown;
}

function call(port: number, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json: JSON.parse(text) });
        } catch (e) {
          reject(new Error(`${method} ${path}: not JSON (${(e as Error).message}): ${text}`));
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

serial('GET /api/health answers JSON from inside the guest (CID 3, tx mode auto)', async (t) => {
  const port = await start();
  const r = await call(port, 'GET', '/api/health');
  t.is(r.status, 200);
  t.is(r.headers['content-type'], 'application/json');
  t.like(r.json as object, { status: 'ok', cid: 3, txMode: 'auto', items: 0 });
});

serial('items: create, list, read, delete; 404 and 400 as JSON errors', async (t) => {
  const port = await start();
  const created = await call(port, 'POST', '/api/items', JSON.stringify({ name: 'tea' }));
  t.is(created.status, 201);
  t.like(created.json as object, { id: 1, name: 'tea' });
  t.is(created.headers['location'], '/api/items/1');
  t.is((await call(port, 'POST', '/api/items', JSON.stringify({ name: 'milk' }))).status, 201);
  const list = (await call(port, 'GET', '/api/items')).json as Array<{ name: string }>;
  t.deepEqual(list.map((i) => i.name), ['tea', 'milk']);
  t.like((await call(port, 'GET', '/api/items/2')).json as object, { id: 2, name: 'milk' });
  t.is((await call(port, 'DELETE', '/api/items/1')).status, 200);
  const gone = await call(port, 'GET', '/api/items/1');
  t.is(gone.status, 404);
  t.deepEqual(gone.json, { error: 'no item 1' });
  const bad = await call(port, 'POST', '/api/items', '{"name": ');
  t.is(bad.status, 400);
  t.regex((bad.json as { error: string }).error, /^body is not a JSON object/);
  t.deepEqual((await call(port, 'PUT', '/api/nothing')).json, { error: 'no route PUT /api/nothing' });
});

serial('20 clients at once each get their own item back', async (t) => {
  const port = await start();
  const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => call(port, 'POST', '/api/items', JSON.stringify({ name: `client ${i}` }))));
  t.true(replies.every((r) => r.status === 201));
  t.deepEqual(replies.map((r) => (r.json as { name: string }).name), Array.from({ length: 20 }, (_, i) => `client ${i}`));
  t.is(new Set(replies.map((r) => (r.json as { id: number }).id)).size, 20);
});

serial("POST /api/shutdown: main() returns the status, tsvirtio run exits with it; the program's output only on stdout; nothing left running", async (t) => {
  const port = await start();
  const c = cmd!;
  const reply = await call(port, 'POST', '/api/shutdown', JSON.stringify({ status: 7 }));
  t.is(reply.status, 202);
  t.deepEqual(reply.json, { stopping: true, status: 7 });
  const exit = await c.exit;
  t.deepEqual(exit, { code: 7, signal: null }, c.stderr());
  t.is(c.stdout(), 'json-api: listening on vsock port 80\njson-api: stopped, exit status 7\n');
  t.regex(c.stderr(), /tsvirtio: the program exited with status 7\n/);
  const parts = c.parts()!;
  t.false(alive(parts.qemu), 'QEMU still running');
  t.false(existsSync(parts.socketDir), 'socket folder left');
});
