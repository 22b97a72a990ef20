// The load client (benchmark helper): flags, and a short run against the host webserver
// with and without keep-alive, HTTP/1.0 as ab sends it.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startHostWebServer } from './support/host-webserver.js';
import { LoadArgsError, parseLoadArgs, runLoad } from '../appliance/webserver/client/load-client.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));
const CLI = fileURLToPath(new URL('../appliance/webserver/client/load-client.js', import.meta.url));

test('flags: defaults, ab-style short flags, errors naming the flag', (t) => {
  t.deepEqual(parseLoadArgs(['--url', 'http://127.0.0.1:8080/big.html?x=1', '-c', '4', '-n', '50', '-k', '--http10', '--json']), {
    host: '127.0.0.1',
    port: 8080,
    path: '/big.html?x=1',
    concurrency: 4,
    requests: 50,
    keepAlive: true,
    http10: true,
    json: true,
  });
  for (const [argv, flag] of [
    [[], '--url'],
    [['--url', 'nope'], '--url'],
    [['--url', 'https://127.0.0.1:1/'], '--url'],
    [['--url', 'http://127.0.0.1/'], '--url'],
    [['--url', 'http://127.0.0.1:1/', '-c', '0'], '-c'],
    [['--url', 'http://127.0.0.1:1/', '-n'], '-n'],
    [['--url', 'http://127.0.0.1:1/', '--fast'], '--fast'],
  ] as Array<[string[], string]>) {
    const e = t.throws(() => parseLoadArgs(argv), { instanceOf: LoadArgsError });
    t.is(e?.flag, flag);
  }
  const r = spawnSync(process.execPath, [CLI, '--url', 'http://127.0.0.1:1/', '-c', 'many'], { encoding: 'utf8' });
  t.is(r.status, 2);
  t.regex(r.stderr, /-c: /);
});

test('a short run: every response complete, with and without keep-alive, HTTP/1.1 and 1.0', async (t) => {
  const srv = await startHostWebServer(SITE, { cache: false });
  t.teardown(() => srv.close());
  for (const keepAlive of [false, true]) {
    for (const http10 of [false, true]) {
      const r = await runLoad({ host: '127.0.0.1', port: srv.port, path: '/big.html', concurrency: 3, requests: 30, keepAlive, http10 });
      t.is(r.failed, 0);
      t.is(r.count, 30);
      t.is(r.bodyBytes, 30 * 133 * 1024);
      t.true(r.requestsPerSecond > 0);
    }
  }
  // Without keep-alive each request had its own connection: 30 + 30; with it, at most 3 each.
  t.true(srv.server.stats.connectionsAccepted <= 60 + 6);
  t.true(srv.server.stats.connectionsAccepted >= 60);
});
