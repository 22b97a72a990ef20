// The vhost-user server's reply queue is bounded: a front end that sends requests
// without reading the replies is dropped (ERR_VHOST_USER_NOT_READING, protocol-error
// event) once MAX_QUEUED_REPLY_BYTES wait, instead of growing the queue without bound;
// a front end that reads every reply is never dropped, however many requests it sends.
import test from 'ava';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { encodeMessage } from '../kernel/vhost-user/codec.js';
import type { VhostUserError } from '../kernel/vhost-user/errors.js';
import { VhostUserFrontend } from '../kernel/vhost-user/frontend-client.js';
import { Request, VERSION } from '../kernel/vhost-user/protocol.js';
import { type VhostUserServer, startVhostUserServer } from '../kernel/vhost-user/server.js';
import { MAX_QUEUED_REPLY_BYTES } from '../kernel/vhost-user/session.js';

async function serve(t: import('ava').ExecutionContext): Promise<{ server: VhostUserServer; path: string; logs: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'vhost-reply-'));
  const path = join(dir, 'vhost.sock');
  const logs: string[] = [];
  const server = await startVhostUserServer({ socketPath: path, model: new VsockDevice({ guestCid: 3 }), log: (level, m) => logs.push(`${level} ${m}`) });
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, path, logs };
}

test('a front end that never reads its replies is dropped with ERR_VHOST_USER_NOT_READING; the next one is served', async (t) => {
  const { server, path, logs } = await serve(t);
  const dropped = once(server, 'protocol-error') as Promise<[VhostUserError, number]>;
  const rude = connect({ path });
  rude.pause();
  rude.on('error', () => {});
  const one = encodeMessage(Request.GET_FEATURES, VERSION);
  rude.write(Buffer.concat(Array.from({ length: 200_000 }, () => one)));
  const [err] = await dropped;
  t.is(err.code, 'ERR_VHOST_USER_NOT_READING');
  t.regex(err.message, new RegExp(`does not read the replies: \\d+ bytes of replies wait \\(at most ${MAX_QUEUED_REPLY_BYTES}\\); dropped`));
  t.true(logs.some((l) => l.startsWith('error client 1 dropped: ERR_VHOST_USER_NOT_READING')));
  rude.destroy();
  const fe = VhostUserFrontend.connect(path);
  t.true((await fe.getFeatures()) > 0n);
  fe.socket.close();
});

test('a front end that reads every reply is never dropped (20000 requests)', async (t) => {
  const { server, path } = await serve(t);
  let errors = 0;
  server.on('protocol-error', () => errors++);
  const fe = VhostUserFrontend.connect(path);
  for (let i = 0; i < 20_000; i++) await fe.getFeatures();
  t.is(errors, 0);
  t.is(server.currentClient, 1);
  fe.socket.close();
});
