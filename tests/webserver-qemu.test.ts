// The appliance in QEMU: appliance/webserver/guest-main.ts (bundled here with esbuild)
// boots as the guest's only program and drives the vsock device (our emulator, over
// vhost-user, in this process) and the virtio-fs device (Debian's C virtiofsd serving
// appliance/site) with our drivers. The host reaches the webserver through the TCP
// forward and the ping-pong service through the hybrid Unix socket, as `npm start` and
// the benchmarks do.
import test from 'ava';
import { VIRTIOFSD_PATH, spawnVirtiofsd } from '../appliance/qemu/virtiofsd.js';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { buildNodeGuest } from '../appliance/image/node-guest.js';
import { type QemuInstance, launchQemu, qemuAvailable } from '../appliance/qemu/launch.js';
import { parseClientArgs } from '../appliance/pingpong/client-args.js';
import { runClient } from '../appliance/pingpong/client.js';
import { runLoad } from '../appliance/webserver/load-client.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { HybridVsockBackend } from '../drivers/virtio-vsock/host/hybrid-unix.js';
import { TcpForward } from '../drivers/virtio-vsock/host/tcp-forward.js';
import { type VhostUserServer, startVhostUserServer } from '../kernel/vhost-user/server.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const SITE = join(root, 'appliance/site');
const addon = join(root, 'build/Release/tsvirtio.node');

interface Guest {
  qemu: QemuInstance;
  httpPort: number;
  udsPath: string;
}

const started: { dir?: string; virtiofsd?: ChildProcess; server?: VhostUserServer; qemu?: QemuInstance; fwd?: TcpForward; hybrid?: HybridVsockBackend } = {};
let guest: Promise<Guest> | null = null;

function startGuest(): Promise<Guest> {
  guest ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'webserver-qemu-'));
    started.dir = dir;
    const bundle = join(dir, 'webserver-guest.js');
    await esbuild.build({ entryPoints: [join(root, 'appliance/webserver/guest-main.ts')], outfile: bundle, bundle: true, format: 'esm', platform: 'node', target: 'node20', external: ['*.node'], logLevel: 'error' });
    const fsSocket = join(dir, 'fs.sock');
    const vfs = spawnVirtiofsd({ socketPath: fsSocket, source: SITE });
    started.virtiofsd = vfs.child;
    await vfs.ready;
    const vsockSocket = join(dir, 'vsock.sock');
    const device = new VsockDevice({ guestCid: 3 });
    started.server = await startVhostUserServer({ socketPath: vsockSocket, model: device, log: () => {} });
    const fwd = new TcpForward({ host: device.host, listenHost: '127.0.0.1', listenPort: 0, guestPort: 8080 });
    started.fwd = fwd;
    const addr = await fwd.listen();
    const udsPath = join(dir, 'v.sock');
    const hybrid = new HybridVsockBackend({ host: device.host, udsPath });
    started.hybrid = hybrid;
    await hybrid.listen();
    const image = await buildNodeGuest({ main: bundle, files: [{ guest: '/app/tsvirtio.node', host: addon }], args: ['--log'] });
    const qemu = launchQemu({
      kernel: image.kernel,
      initrd: image.initrd,
      append: image.append,
      vhostUserVsock: { socket: vsockSocket },
      virtiofs: { socket: fsSocket, tag: 'site' },
      timeoutMs: 10 * 60 * 1000, // safety net against a hung guest, not an assertion
    });
    started.qemu = qemu;
    await qemu.waitForLine('webserver: webserver on vsock port 8080', 5 * 60 * 1000);
    return { qemu, httpPort: addr.port, udsPath };
  })();
  return guest;
}

test.after.always(async () => {
  if (started.qemu?.running) await started.qemu.stop();
  await started.fwd?.close();
  await started.hybrid?.close();
  await started.server?.close();
  const v = started.virtiofsd;
  if (v && v.exitCode === null && v.signalCode === null) {
    const gone = new Promise((resolve) => v.once('exit', resolve));
    v.kill('SIGTERM');
    await gone;
  }
  if (started.dir) rmSync(started.dir, { recursive: true, force: true });
});

function siteFiles(dir = SITE, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) siteFiles(p, out);
    else out.push('/' + relative(SITE, p).split('\\').join('/'));
  }
  return out;
}

function fetchOne(port: number, path: string, agent?: http.Agent): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: agent ?? false }, (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const ready = qemuAvailable() && existsSync(VIRTIOFSD_PATH) && existsSync(addon);
const guestTest = ready ? test.serial : test.skip;
if (!ready) console.warn('webserver-qemu: skipped (needs qemu-system-x86_64, virtiofsd and the native addon)');

guestTest('every file of the site, byte-identical, through virtio-fs and vsock in the guest', async (t) => {
  const g = await startGuest();
  for (const f of siteFiles()) {
    const r = await fetchOne(g.httpPort, f);
    t.is(r.status, 200, f);
    t.true(r.body.equals(readFileSync(join(SITE, f))), f);
  }
  const dir = await fetchOne(g.httpPort, '/docs');
  t.is(dir.status, 301);
  t.is(dir.headers.location, '/docs/');
  t.is((await fetchOne(g.httpPort, '/nope.html')).status, 404);
  t.is((await fetchOne(g.httpPort, '/%2e%2e/%2e%2e/etc/passwd')).status, 403);
});

guestTest('keep-alive and concurrent clients, as ab and the benchmark drive it', async (t) => {
  const g = await startGuest();
  for (const keepAlive of [false, true]) {
    const r = await runLoad({ host: '127.0.0.1', port: g.httpPort, path: '/big.html', concurrency: 4, requests: 24, keepAlive, http10: !keepAlive });
    t.is(r.failed, 0);
    t.is(r.bodyBytes, 24 * 133 * 1024);
    t.log(`${keepAlive ? 'keep-alive' : 'HTTP/1.0, a connection per request'}: ${r.requestsPerSecond} req/s at concurrency 4 (TCG)`);
  }
});

guestTest('ping-pong through the hybrid Unix socket', async (t) => {
  const g = await startGuest();
  const out = JSON.parse(await runClient(parseClientArgs(['--uds', `${g.udsPath}:5000`, '--sizes', '8192,16384', '--iterations', '20', '--warmup', '2', '--json'])));
  t.deepEqual(
    out.results.map((r: { sizeBytes: number; count: number }) => [r.sizeBytes, r.count]),
    [
      [8192, 20],
      [16384, 20],
    ],
  );
  t.log(`ping-pong p50: 8 KiB ${out.results[0].p50Us} us, 16 KiB ${out.results[1].p50Us} us (TCG)`);
  t.regex(g.qemu.console(), /webserver: GET \/big\.html HTTP\/1\.\d 200/);
});
