// `npm start` (dist/appliance/main.js) without a guest running: --help, bad flags (exit
// 2, naming the flag), a part that cannot start (exit 1, naming the part and why), and
// a guest crash (QEMU killed: exit 1, says so, virtiofsd gone, no socket left).
import test from 'ava';
import { freePortPair } from './support/ports.js';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuAvailable } from '../appliance/qemu/launch.js';
import { pidAlive } from './support/pid-alive.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const main = join(root, 'dist', 'appliance', 'main.js');
const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

const children = new Set<ChildProcess>();
const extraPids: number[] = [];

function run(args: string[], env: NodeJS.ProcessEnv = {}, onOutput?: (all: string, child: ChildProcess) => void): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    children.add(c);
    let out = '';
    const on = (d: Buffer): void => {
      out += d.toString();
      onOutput?.(out, c);
    };
    c.stdout!.on('data', on);
    c.stderr!.on('data', on);
    c.once('exit', (code) => {
      children.delete(c);
      resolve({ code, out });
    });
  });
}


test.after.always(async () => {
  for (const c of children) {
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
  }
  for (const pid of extraPids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

const built = existsSync(main);
const t1 = built ? test : test.skip;

t1('--help prints the usage and exits 0', async (t) => {
  const r = await run(['--help']);
  t.is(r.code, 0);
  t.regex(r.out, /--port N/);
  t.regex(r.out, /--site DIR/);
  t.regex(r.out, /--memory MiB/);
  t.regex(r.out, /--machine M/);
});

t1('bad flags: exit 2 with a message naming the flag', async (t) => {
  for (const [args, flag] of [
    [['--port', 'x'], '--port'],
    [['--port', '70000'], '--port'],
    [['--memory', '12'], '--memory'],
    [['--machine', 'pc'], '--machine'],
    [['--drivers', 'kernel', '--machine', 'microvm'], '--machine q35'],
    [['--bogus'], '--bogus'],
    [['--site'], '--site'],
  ] as const) {
    const r = await run([...args]);
    t.is(r.code, 2, args.join(' '));
    t.true(r.out.includes(flag), `${args.join(' ')}: ${r.out}`);
  }
});

t1('a missing site folder or virtiofsd: exit 1 naming the part', async (t) => {
  const site = await run(['--site', '/nonexistent/site']);
  t.is(site.code, 1);
  t.regex(site.out, /cannot start site: \/nonexistent\/site is not a directory/);
  const fsd = await run([], { TSVIRTIO_VIRTIOFSD: '/nonexistent/virtiofsd' });
  t.is(fsd.code, 1);
  t.regex(fsd.out, /virtiofsd not found at \/nonexistent\/virtiofsd: run npm run setup/);
});

const withQemu = built && qemuAvailable() && existsSync(VIRTIOFSD) ? test.serial : test.skip;

withQemu('--memory below what the image needs: refused before the launch, with the need and how it adds up', async (t) => {
  const r = await run(['--memory', '64', '--port', String(await freePortPair())]);
  t.is(r.code, 1, r.out);
  t.regex(r.out, /cannot start guest: --memory 64 is too little for this image: it needs at least \d+ MiB \(\d+ MiB of hugepages for DMA, \d+ MiB for the kernel, node's pages and the appliance\)/);
  t.notRegex(r.out, /booting/);
});

withQemu('a port in use: exit 1 naming the daemon; virtiofsd stopped, no socket left', async (t) => {
  const blocker: Server = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as { port: number }).port;
  try {
    const r = await run(['--port', String(port)]);
    t.is(r.code, 1, r.out);
    t.regex(r.out, /cannot start daemon: .*already in use/);
    t.notRegex(r.out, /booting/);
  } finally {
    await new Promise((r) => blocker.close(r));
  }
});

withQemu('the guest dies (QEMU killed): says so, exits 1, stops virtiofsd, leaves no socket', async (t) => {
  let killed = false;
  let pids: { qemu: number; fsd: number; dir: string } | null = null;
  const port = await freePortPair();
  const r = await run(['--port', String(port)], {}, (out) => {
    if (killed) return;
    const m = /qemu pid (\d+), virtiofsd pid (\d+), .* sockets in (\S+)/.exec(out);
    if (m && out.includes('serving')) {
      killed = true;
      pids = { qemu: Number(m[1]), fsd: Number(m[2]), dir: m[3]! };
      extraPids.push(pids.qemu, pids.fsd);
      process.kill(pids.qemu, 'SIGKILL');
    }
  });
  t.true(killed, r.out);
  t.is(r.code, 1, r.out);
  t.regex(r.out, /the guest stopped unexpectedly/);
  const p = pids as { qemu: number; fsd: number; dir: string } | null;
  if (p === null) return;
  t.false(pidAlive(p.fsd), 'virtiofsd still running');
  t.deepEqual(existsSync(p.dir) ? readdirSync(p.dir) : [], []);
});
