// `npm start` end to end: spawns `node dist/appliance/main.js --port P` once (the default
// path: microvm in 128 MiB, our kernel, the program from a startup snapshot; virtiofsd,
// the in-process vsock daemon with its TCP forwards), with an empty VM state folder: the
// first start of an image, which boots, saves the VM state and goes on with our vsock +
// virtio-fs drivers on hotplugged PCI devices (restoring: vm-snapshot-qemu.test.ts).
// Fetches the sample site through 127.0.0.1:P, runs ab -c 8 and the ping-pong client
// against P+1, then sends SIGINT and checks the clean shutdown.
import test from 'ava';
import { freePortPair } from './support/ports.js';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { type Socket, createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseClientArgs } from '../appliance/pingpong/client-args.js';
import { runClient } from '../appliance/pingpong/client.js';
import { qemuAvailable } from '../appliance/qemu/launch.js';
import { HttpResponseReader, type RawHttpResponse } from '../appliance/webserver/client/http-response-reader.js';
import { pidAlive } from './support/pid-alive.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const main = join(root, 'dist', 'appliance', 'main.js');
const site = join(root, 'appliance', 'site');
const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

interface Started {
  child: ChildProcess;
  port: number;
  pingPongPort: number;
  url: string;
  qemuPid: number;
  virtiofsdPid: number;
  socketDir: string;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const stateDir = mkdtempSync(join(tmpdir(), 'tsvirtio-start-states-'));
let started: Promise<Started> | null = null;
let child: ChildProcess | null = null;
const pids: number[] = [];

function start(): Promise<Started> {
  started ??= (async () => {
    const port = await freePortPair();
    // A process group of its own, as a terminal gives a command: the last test sends SIGINT to the whole group.
    const c = spawn(process.execPath, [main, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, TSVIRTIO_VM_STATE_DIR: stateDir } });
    child = c;
    let out = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => c.once('exit', (code, signal) => r({ code, signal })));
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (/serving .* at http:\/\/127\.0\.0\.1:\d+\//.test(out)) {
          c.stdout!.off('data', check);
          resolve();
        }
      };
      c.stdout!.on('data', check);
      void exit.then((e) => reject(new Error(`main.js exited (${e.code ?? e.signal}) before serving:\n${out}`)));
    });
    const num = (re: RegExp): number => Number(re.exec(out)![1]);
    const s: Started = {
      child: c,
      port,
      pingPongPort: num(/ping-pong: 127\.0\.0\.1:(\d+)/),
      url: /serving .* at (http:\S+)/.exec(out)![1]!,
      qemuPid: num(/qemu pid (\d+)/),
      virtiofsdPid: num(/virtiofsd pid (\d+)/),
      socketDir: /sockets in (\S+)/.exec(out)![1]!,
      output: () => out,
      exit,
    };
    pids.push(s.qemuPid, s.virtiofsdPid);
    return s;
  })();
  return started;
}


test.after.always(async () => {
  const c = child;
  if (c && c.exitCode === null && c.signalCode === null) {
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGINT');
    const t = setTimeout(() => c.kill('SIGKILL'), 30_000);
    await gone;
    clearTimeout(t);
  }
  // Whatever the appliance did not stop (a failed test), stop here by pid.
  for (const pid of pids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(stateDir, { recursive: true, force: true });
});

function siteFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? siteFiles(p) : [p];
  });
}

function connect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** One raw request on a new connection. */
async function raw(port: number, text: string, head = false): Promise<RawHttpResponse> {
  const s = await connect(port);
  try {
    const r = new HttpResponseReader(s);
    s.write(text);
    return await r.next({ head });
  } finally {
    s.destroy();
  }
}

const get = (port: number, path: string): Promise<RawHttpResponse> => raw(port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);

const ready = qemuAvailable() && existsSync(VIRTIOFSD) && existsSync(main) && existsSync(join(root, 'dist', 'bundles', 'appliance.js'));
const qtest = ready ? test.serial : test.skip;
if (!ready) console.warn('appliance-start: skipped (needs qemu-system-x86_64, virtiofsd and `node build.mjs` output)');

qtest('prints the URL and the pids; every file of the site comes back byte-identical', async (t) => {
  const s = await start();
  t.is(s.url, `http://127.0.0.1:${s.port}/`);
  t.is(s.pingPongPort, s.port + 1);
  t.regex(s.output(), /building image…/);
  t.regex(s.output(), /booting \(microvm, 128 MiB; its state is saved for later starts\)…/);
  t.regex(s.output(), /saved the VM state \([\d.]+ MB, .*\.state\): later starts restore it/);
  t.is(readdirSync(stateDir).filter((f) => f.endsWith('.state')).length, 1, 'one state saved, no temporary file left');
  // The boot waterfall, every stage from QEMU's start to the first response.
  const booted = /booted in ([\d.]+) s: (.*)/.exec(s.output());
  t.truthy(booted, s.output());
  for (const step of ['QEMU start', 'firmware', 'kernel', 'init', 'exec', 'node start', 'DMA memory', 'save state', 'resume', 'hotplug', 'devices', 'services', 'first response']) {
    t.regex(booted![2]!, new RegExp(`${step} \\d+\\.\\d\\d`), step);
  }
  const files = siteFiles(site);
  t.true(files.length >= 5);
  for (const f of files) {
    const path = '/' + relative(site, f).split('/').join('/');
    const r = await get(s.port, path);
    t.is(r.status, 200, path);
    t.true(r.body.equals(readFileSync(f)), `${path}: body differs from the host's copy`);
  }
  const index = await get(s.port, '/');
  t.is(index.status, 200);
  t.true(index.body.equals(readFileSync(join(site, 'index.html'))));
});

qtest('HEAD, 404, 400 for garbage, 405, a .. path refused', async (t) => {
  const s = await start();
  const big = readFileSync(join(site, 'big.html'));
  const head = await raw(s.port, 'HEAD /big.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', true);
  t.is(head.status, 200);
  t.is(Number(head.headers['content-length']), big.length);
  t.is((await get(s.port, '/no-such-page.html')).status, 404);
  t.is((await raw(s.port, 'THIS IS NOT HTTP\r\n\r\n')).status, 400);
  const post = await raw(s.port, 'POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  t.is(post.status, 405);
  t.regex(post.headers['allow'] ?? '', /GET/);
  for (const path of ['/../etc/passwd', '/docs/../../etc/passwd', '/%2e%2e/etc/passwd']) {
    const r = await get(s.port, path);
    t.true(r.status === 403 || r.status === 400, `${path}: ${r.status}`);
    t.false(r.body.toString().includes('root:'), path);
  }
});

qtest('200 keep-alive requests on one connection', async (t) => {
  const s = await start();
  const index = readFileSync(join(site, 'index.html'));
  const sock = await connect(s.port);
  try {
    const reader = new HttpResponseReader(sock);
    for (let i = 0; i < 200; i++) {
      sock.write('GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n');
      const r = await reader.next();
      t.is(r.status, 200);
      if (!r.body.equals(index)) return t.fail(`request ${i}: body differs`);
    }
  } finally {
    sock.destroy();
  }
});

qtest('20 clients at once get the 133 KB page intact', async (t) => {
  const s = await start();
  const big = readFileSync(join(site, 'big.html'));
  const results = await Promise.all(Array.from({ length: 20 }, () => get(s.port, '/big.html')));
  for (const r of results) {
    t.is(r.status, 200);
    t.true(r.body.equals(big));
  }
});

const abAvailable = spawnSync('ab', ['-V']).status === 0;
(abAvailable ? qtest : test.skip)('ab -c 8 -n 1000 on the 133 KB page in 128 MiB: no failed request', async (t) => {
  const s = await start();
  const r = spawnSync('ab', ['-q', '-c', '8', '-n', '1000', `${s.url}big.html`], { encoding: 'utf8', timeout: 5 * 60_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /Complete requests:\s+1000\b/);
  t.regex(r.stdout, /Failed requests:\s+0\b/);
  t.notRegex(r.stdout, /Non-2xx responses/);
  t.regex(r.stdout, new RegExp(`Document Length:\\s+${readFileSync(join(site, 'big.html')).length} bytes`));
});

qtest('the ping-pong client runs against the forward and reports latencies', async (t) => {
  const s = await start();
  const text = await runClient(parseClientArgs(['--connect', `127.0.0.1:${s.pingPongPort}`, '--sizes', '8192,16384', '--iterations', '30', '--warmup', '3', '--json']));
  const r = JSON.parse(text) as { results: Array<{ sizeBytes: number; count: number; p50Us: number; p99Us: number }> };
  t.deepEqual(
    r.results.map((x) => [x.sizeBytes, x.count]),
    [
      [8192, 30],
      [16384, 30],
    ],
  );
  for (const x of r.results) t.true(x.p50Us > 0 && x.p99Us >= x.p50Us);
  t.log(r.results.map((x) => `${x.sizeBytes} B: p50 ${x.p50Us} us, p99 ${x.p99Us} us`).join('; '));
});

qtest('Ctrl-C (SIGINT to the whole process group, as a terminal sends it): exits 0 with one "stopped", no QEMU error line, QEMU and virtiofsd gone, no socket file left', async (t) => {
  const s = await start();
  const before = s.output().length;
  process.kill(-s.child.pid!, 'SIGINT');
  const e = await s.exit;
  t.is(e.code, 0, s.output().slice(-3000));
  const shutdown = s.output().slice(before);
  t.notRegex(shutdown, /qemu-system-x86_64:/, shutdown);
  t.is(shutdown.match(/\bstopped\b/g)?.length, 1, shutdown);
  t.false(pidAlive(s.qemuPid), 'QEMU still running');
  t.false(pidAlive(s.virtiofsdPid), 'virtiofsd still running');
  const left = existsSync(s.socketDir) ? readdirSync(s.socketDir) : [];
  t.deepEqual(left, []);
  t.regex(s.output(), /stopped/);
});
