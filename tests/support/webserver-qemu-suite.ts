// The appliance in QEMU, on each machine, registered by tests/webserver-qemu.test.ts (the
// launcher's devices: split rings) and tests/webserver-qemu-packed.test.ts (the
// vhost-user devices with packed=on: the vsock rings packed, virtio 1.2 2.8; the
// virtio-fs rings stay split, Debian's virtiofsd 7.2 offering no packed layout):
// tests/support/webserver-duplex-guest.ts (bundled here with esbuild) boots as the
// guest's only program and drives the vsock device (our emulator, over vhost-user, in
// this process) and the virtio-fs device (Debian's C virtiofsd serving appliance/site)
// with our drivers, on virtio-mmio (microvm) or modern PCI (q35). The host reaches the
// webserver through the TCP forward and the ping-pong service through the hybrid Unix
// socket, as `npm start` and the benchmarks do.
import test from 'ava';
import { VIRTIOFSD_PATH } from '../../appliance/qemu/virtiofsd.js';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import http from 'node:http';
import { join, relative } from 'node:path';
import * as esbuild from 'esbuild';
import type { QemuInstance } from '../../appliance/qemu/launch.js';
import { parseClientArgs } from '../../appliance/pingpong/client-args.js';
import { runClient } from '../../appliance/pingpong/client.js';
import { runLoad } from '../../appliance/webserver/client/load-client.js';
import { HybridVsockBackend } from '../../drivers/virtio-vsock/host/hybrid-unix.js';
import { TcpForward } from '../../drivers/virtio-vsock/host/tcp-forward.js';
import { ADDON, Cleanup, GuestPerMachine, MACHINES, ROOT, deviceOpenedPattern, guestTestsReady, launchGuest, startVirtiofsd, startVsockBackend } from './qemu-guest.js';

export interface WebserverQemuSuite {
  /** The test file's name (skip message, temporary folders, image name). */
  file: string;
  /** The vhost-user devices with packed=on. */
  packed: boolean;
}

export function webserverQemuTests(suite: WebserverQemuSuite): void {
  const SITE = join(ROOT, 'appliance/site');

  interface Guest {
    qemu: QemuInstance;
    httpPort: number;
    udsPath: string;
    /** The vsock back end's log lines. */
    backendLog: string[];
  }

  // The guest program, bundled once for both machines.
  const files = new Cleanup();
  let bundle: Promise<string> | null = null;
  function bundleOnce(): Promise<string> {
    bundle ??= (async () => {
      const out = join(files.tempDir('webserver-qemu-'), 'webserver-guest.js');
      await esbuild.build({ entryPoints: [join(ROOT, 'tests/support/webserver-duplex-guest.ts')], outfile: out, bundle: true, format: 'esm', platform: 'node', target: 'node20', external: ['*.node'], logLevel: 'error' });
      return out;
    })();
    return bundle;
  }

  const guests = new GuestPerMachine<Guest>(async (machine, cleanup) => {
    const main = await bundleOnce();
    const dir = cleanup.tempDir(`${suite.file}-`);
    const fsSocket = join(dir, 'fs.sock');
    await startVirtiofsd(cleanup, { socketPath: fsSocket, source: SITE });
    const vsockSocket = join(dir, 'vsock.sock');
    const backendLog: string[] = [];
    const { device } = await startVsockBackend(cleanup, vsockSocket, (l) => backendLog.push(l));
    const fwd = new TcpForward({ host: device.host, listenHost: '127.0.0.1', listenPort: 0, guestPort: 8080 });
    cleanup.add(() => fwd.close());
    const addr = await fwd.listen();
    const udsPath = join(dir, 'v.sock');
    const hybrid = new HybridVsockBackend({ host: device.host, udsPath });
    cleanup.add(() => hybrid.close());
    await hybrid.listen();
    const qemu = await launchGuest(
      machine,
      { main, name: `node-guest-${suite.file}`, args: ['--log'], vhostUserVsock: { socket: vsockSocket }, virtiofs: { socket: fsSocket, tag: 'site' }, packedRings: suite.packed, timeoutMs: 10 * 60 * 1000 },
      cleanup,
    );
    await qemu.waitForLine('webserver: webserver on vsock port 8080', 5 * 60 * 1000);
    return { qemu, httpPort: addr.port, udsPath, backendLog };
  });
  test.after.always(async () => {
    try {
      await guests.stopAll();
    } finally {
      await files.run();
    }
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

  const guestTest = guestTestsReady(suite.file, [VIRTIOFSD_PATH, ADDON]) ? test.serial : test.skip;

  for (const machine of MACHINES) {
    guestTest(`${machine}: ring layouts: vsock ${suite.packed ? 'packed' : 'split'}, virtio-fs split`, async (t) => {
      const g = await guests.get(machine);
      // The guest's drivers take the packed layout whenever it is offered (ring: 'auto').
      const layout = suite.packed ? 'packed' : 'split';
      t.regex(g.qemu.console(), new RegExp(`rings: vsock ${layout}, fs split`));
      const starts = g.backendLog.filter((l) => / ring \d running \(/.test(l));
      t.true(starts.length >= 2, g.backendLog.join('\n'));
      t.true(starts.every((l) => l.includes(`(${layout},`)), starts.join('\n'));
    });

    guestTest(`${machine}: every file of the site, byte-identical, through virtio-fs and vsock in the guest`, async (t) => {
      const g = await guests.get(machine);
      t.regex(g.qemu.console(), deviceOpenedPattern(machine, 19));
      t.regex(g.qemu.console(), deviceOpenedPattern(machine, 26));
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

    guestTest(`${machine}: keep-alive and concurrent clients, as ab and the benchmark drive it`, async (t) => {
      const g = await guests.get(machine);
      for (const keepAlive of [false, true]) {
        const r = await runLoad({ host: '127.0.0.1', port: g.httpPort, path: '/big.html', concurrency: 4, requests: 24, keepAlive, http10: !keepAlive });
        t.is(r.failed, 0);
        t.is(r.bodyBytes, 24 * 133 * 1024);
        t.log(`${keepAlive ? 'keep-alive' : 'HTTP/1.0, a connection per request'}: ${r.requestsPerSecond} req/s at concurrency 4 (TCG)`);
      }
    });

    guestTest(`${machine}: ping-pong through the hybrid Unix socket`, async (t) => {
      const g = await guests.get(machine);
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

    guestTest(`${machine}: node's code is locked in RAM after the server listens, not before (BootOptions.lockCode)`, async (t) => {
      const g = await guests.get(machine);
      const locked = /webserver: code locked in RAM: (\d+) read-only file mappings, ([\d.]+) MiB/;
      // The lock comes LOCK_AFTER_LISTENING_MS after the mark: wait for the line, however slow the guest.
      for (let i = 0; i < 600 && !locked.test(g.qemu.console()); i++) await new Promise((r) => setTimeout(r, 100));
      const text = g.qemu.console();
      const m = locked.exec(text);
      if (m === null) return t.fail(`no code-lock line in the console:\n${text.slice(-3000)}`);
      t.true(Number(m[1]) >= 5 && Number(m[2]) > 50, m[0]); // node's binary alone maps ~86 MB
      t.true(text.indexOf('tsvirtio-stage: listening') >= 0 && text.indexOf('tsvirtio-stage: listening') < m.index, 'locked before the listening mark');
    });
  }
}
