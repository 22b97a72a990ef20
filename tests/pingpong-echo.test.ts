// The ping-pong service and its client: over node:net, over the daemon's hybrid Unix
// socket convention (a fake end and the real one, in process, with the echo on our
// vsock driver), the command line's errors and exit status.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { HybridVsockBackend } from '../drivers/virtio-vsock/host/hybrid-unix.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { ClientArgsError, parseClientArgs } from '../appliance/pingpong/client-args.js';
import { connectTarget, runClient } from '../appliance/pingpong/client.js';
import { runPingPong } from '../appliance/pingpong/echo-server.js';
import { connectHybridVsock } from '../appliance/pingpong/hybrid-connect.js';
import { percentile, summarize, textHistogram } from '../appliance/pingpong/latency-summary.js';
import { measurePingPong } from '../appliance/pingpong/ping-pong-client.js';
import { listenNet } from '../appliance/webserver/listen/net-listen.js';
import { vsockListen } from '../appliance/webserver/listen/vsock-adapters.js';

const CLIENT = fileURLToPath(new URL('../appliance/pingpong/client.js', import.meta.url));

async function netEcho(t: import('ava').ExecutionContext) {
  const pp = await runPingPong({ listen: (port, onSocket) => listenNet(port, onSocket), port: 0 });
  t.teardown(() => pp.close());
  t.not(pp.port, 0, 'the bound port is reported');
  return pp;
}

test('client against the echo service over node:net: every size, full echoes, sane percentiles', async (t) => {
  const pp = await netEcho(t);
  const port = pp.port;
  const socket = await connectTarget({ kind: 'tcp', host: '127.0.0.1', port }, 5000);
  t.teardown(() => socket.destroy());
  const sizes = [1, 8192, 16384, 200_000];
  const results = await measurePingPong(socket, { sizes, iterations: 30, warmup: 2 });
  t.deepEqual(results.map((r) => r.sizeBytes), sizes);
  for (const r of results) {
    t.is(r.count, 30);
    t.true(r.minUs <= r.p50Us && r.p50Us <= r.p90Us && r.p90Us <= r.p99Us && r.p99Us <= r.maxUs);
  }
  t.is(pp.service.stats.bytesEchoed, 32 * sizes.reduce((a, b) => a + b, 0));
});

test('runClient prints tables, or JSON with --json', async (t) => {
  const pp = await netEcho(t);
  const port = pp.port;
  const progress: string[] = [];
  const text = await runClient(parseClientArgs(['--connect', `127.0.0.1:${port}`, '--sizes', '8192,16384', '--iterations', '20']), (size, done, of) => progress.push(`${size} ${done}/${of}`));
  // Progress comes at least when each size is done (and every second in between).
  t.true(progress.includes('8192 20/20') && progress.includes('16384 20/20'), progress.join(', '));
  t.regex(text, /size 8192 bytes, 20 round trips/);
  t.regex(text, /p50 [\d.]+ us {2}p90 [\d.]+ us {2}p99 [\d.]+ us {2}max [\d.]+ us/);
  t.regex(text, /size 16384 bytes/);
  t.regex(text, /us +\d+ #+/);
  const json = JSON.parse(await runClient(parseClientArgs(['--connect', `127.0.0.1:${port}`, '--iterations', '10', '--json'])));
  t.deepEqual(
    json.results.map((r: { sizeBytes: number; count: number }) => [r.sizeBytes, r.count]),
    [
      [8192, 10],
      [16384, 10],
    ],
  );
  for (const k of ['p50Us', 'p90Us', 'p99Us', 'maxUs', 'minUs', 'meanUs', 'totalMs', 'throughputMBps']) t.is(typeof json.results[0][k], 'number', k);
  t.false('samplesNs' in json.results[0]);
});

test('the client detects an echo that differs from what was sent', async (t) => {
  const server = createServer((s) => s.on('data', (d: Buffer) => s.write(Buffer.alloc(d.length, 0xee))));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const socket = await connectTarget({ kind: 'tcp', host: '127.0.0.1', port }, 5000);
  t.teardown(() => socket.destroy());
  await t.throwsAsync(measurePingPong(socket, { sizes: [100], iterations: 1 }), { message: /differs/ });
});

const ARG_ERRORS: Array<[string[], string]> = [
  [[], '--connect'],
  [['--connect'], '--connect'],
  [['--connect', 'localhost'], '--connect'],
  [['--connect', '127.0.0.1:0'], '--connect'],
  [['--connect', '127.0.0.1:70000'], '--connect'],
  [['--uds', '/tmp/x'], '--uds'],
  [['--uds', '/tmp/x:99999999999'], '--uds'],
  [['--connect', '127.0.0.1:1', '--uds', '/tmp/x:5'], '--uds'],
  [['--connect', '127.0.0.1:1', '--sizes', ''], '--sizes'],
  [['--connect', '127.0.0.1:1', '--sizes', '8192,abc'], '--sizes'],
  [['--connect', '127.0.0.1:1', '--sizes', '0'], '--sizes'],
  [['--connect', '127.0.0.1:1', '--iterations', '0'], '--iterations'],
  [['--connect', '127.0.0.1:1', '--iterations', '-5'], '--iterations'],
  [['--connect', '127.0.0.1:1', '--iterations', '1.5'], '--iterations'],
  [['--connect', '127.0.0.1:1', '--warmup', 'x'], '--warmup'],
  [['--connect', '127.0.0.1:1', '--timeout-ms', '0'], '--timeout-ms'],
  [['--connect', '127.0.0.1:1', '--verbose'], '--verbose'],
];

test('bad flags are refused with a message naming the flag', (t) => {
  for (const [argv, flag] of ARG_ERRORS) {
    const err = t.throws(() => parseClientArgs(argv), { instanceOf: ClientArgsError }, argv.join(' '));
    t.is(err?.flag, flag, argv.join(' '));
    t.true(err?.message.startsWith(flag), err?.message);
  }
  const ok = parseClientArgs(['--uds', '/run/v.sock:5000', '--sizes', '8192, 16384', '--iterations', '7', '--warmup', '0', '--json']);
  t.deepEqual(ok, { target: { kind: 'uds', path: '/run/v.sock', guestPort: 5000 }, sizes: [8192, 16384], iterations: 7, warmup: 0, json: true, timeoutMs: 10000, quiet: false });
  t.deepEqual(parseClientArgs(['--connect', '[::1]:80']).target, { kind: 'tcp', host: '::1', port: 80 });
});

test('the client program answers --help (exit 0, every flag explained) before checking anything else', (t) => {
  for (const argv of [['--help'], ['-h'], ['--connect', 'nonsense', '--help']]) {
    const r = spawnSync(process.execPath, [CLIENT, ...argv], { encoding: 'utf8' });
    t.is(r.status, 0, argv.join(' '));
    for (const flag of ['--connect', '--uds', '--sizes', '--iterations', '--warmup', '--timeout-ms', '--json', '--quiet']) t.regex(r.stdout, new RegExp(`^  ${flag}`, 'm'), flag);
  }
});

test('the client program exits with status 2 and names the flag', (t) => {
  const r = spawnSync(process.execPath, [CLIENT, '--connect', '127.0.0.1:1', '--sizes', 'big'], { encoding: 'utf8' });
  t.is(r.status, 2);
  t.regex(r.stderr, /--sizes/);
  const r2 = spawnSync(process.execPath, [CLIENT, '--bogus'], { encoding: 'utf8' });
  t.is(r2.status, 2);
  t.regex(r2.stderr, /--bogus/);
});

test('percentiles are nearest-rank; the histogram lists non-empty buckets', (t) => {
  const s = Float64Array.from({ length: 100 }, (_, i) => (i + 1) * 1000);
  t.is(percentile(s, 0.5), 50_000);
  t.is(percentile(s, 0.99), 99_000);
  t.is(percentile(s, 1), 100_000);
  const sum = summarize([3000, 1000, 2000]);
  t.deepEqual([sum.minUs, sum.p50Us, sum.maxUs, sum.meanUs, sum.count], [1, 2, 3, 2, 3]);
  const h = textHistogram([1000, 1000, 64_000]);
  t.is(h.trim().split('\n').length, 2);
  t.is(summarize([]).count, 0);
});

function hybridFake(t: import('ava').ExecutionContext, reply: string) {
  const dir = mkdtempSync(join(tmpdir(), 'pp-hybrid-'));
  const path = join(dir, 'v.sock');
  const server = createServer((s) => {
    let line = '';
    s.on('data', (d: Buffer) => {
      if (line.endsWith('\n')) {
        s.write(d); // echo after the handshake
        return;
      }
      line += d.toString('latin1');
      if (line.endsWith('\n')) s.write(reply);
    });
    s.on('error', () => {});
  });
  t.teardown(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });
  return new Promise<string>((resolve) => server.listen(path, () => resolve(path)));
}

test('hybrid connect: CONNECT <port>, OK <n>, then the echo; ERR is an error', async (t) => {
  const okPath = await hybridFake(t, 'OK 1073741824\n');
  const socket = await connectHybridVsock(okPath, 5000);
  t.teardown(() => socket.destroy());
  const [r] = await measurePingPong(socket, { sizes: [8192], iterations: 5 });
  t.is(r!.count, 5);
  const errPath = await hybridFake(t, 'ERR ECONNREFUSED\n');
  await t.throwsAsync(connectHybridVsock(errPath, 5000), { message: /refused: "ERR ECONNREFUSED"/ });
  await t.throwsAsync(connectHybridVsock(join(tmpdir(), 'no-such-dir-pp', 'x.sock'), 5000), { message: /ENOENT/ });
});

test('end to end in process: client --uds through the hybrid back end to the echo on our vsock driver', async (t) => {
  const device = new VsockDevice({ guestCid: 3 });
  const tr = InProcessTransport.sameThread(device, { memoryBytes: 48 << 20 });
  const driver = await VsockDriver.start(tr);
  const dir = mkdtempSync(join(tmpdir(), 'pp-e2e-'));
  const udsPath = join(dir, 'vsock.sock');
  const backend = new HybridVsockBackend({ host: device.host, udsPath });
  await backend.listen();
  const pp = await runPingPong({ listen: vsockListen(driver), port: 5000 });
  t.teardown(async () => {
    await pp.close();
    await backend.close();
    driver.close();
    await tr.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const json = JSON.parse(await runClient(parseClientArgs(['--uds', `${udsPath}:5000`, '--sizes', '8192,16384', '--iterations', '30', '--json'])));
  t.deepEqual(
    json.results.map((r: { sizeBytes: number; count: number }) => [r.sizeBytes, r.count]),
    [
      [8192, 30],
      [16384, 30],
    ],
  );
  t.is(pp.service.stats.bytesEchoed, (30 + 10) * (8192 + 16384));
  await t.throwsAsync(runClient(parseClientArgs(['--uds', `${udsPath}:5999`, '--iterations', '1'])), { message: /refused/ });
});
