// The vhost-user-vsock daemon's command line: parsing, validation (flag named, exit 2),
// --help, and startDaemon with a fake vhost-user server factory (hybrid socket and TCP
// forward come up and go down).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliUsageError, HELP_TEXT, parseArgs } from '../drivers/virtio-vsock/daemon/config.js';
import { main } from '../drivers/virtio-vsock/daemon/cli.js';
import { TURN_SHARE_ALONE, TURN_SHARE_SHARED } from '../drivers/virtio-vsock/device/constants.js';
import { startDaemon, type VhostUserServerFactory } from '../drivers/virtio-vsock/daemon/daemon.js';

test('parses repeatable --vm and --forward, both value forms', (t) => {
  const p = parseArgs([
    '--vm',
    'guest-cid=3,socket=/tmp/a.sock,uds-path=/tmp/a.vsock',
    '--vm=guest-cid=4,socket=/tmp/b.sock',
    '--forward',
    '127.0.0.1:8080=3:80',
    '--forward=[::1]:8081=4:8080',
    '--forward',
    'localhost:9000=3:4294967294',
  ]);
  t.deepEqual(p, {
    help: false,
    config: {
      vms: [
        { guestCid: 3, socketPath: '/tmp/a.sock', udsPath: '/tmp/a.vsock' },
        { guestCid: 4, socketPath: '/tmp/b.sock', udsPath: null },
      ],
      forwards: [
        { listenHost: '127.0.0.1', listenPort: 8080, guestCid: 3, guestPort: 80 },
        { listenHost: '::1', listenPort: 8081, guestCid: 4, guestPort: 8080 },
        { listenHost: 'localhost', listenPort: 9000, guestCid: 3, guestPort: 4294967294 },
      ],
    },
  });
  t.deepEqual(parseArgs(['--vm', 'guest-cid=3,socket=/x', '--help']), { help: true });
  t.deepEqual(parseArgs(['-h']), { help: true });
});

const VM = 'guest-cid=3,socket=/tmp/s.sock';
const BAD: Array<[string, string[], string, RegExp]> = [
  ['no --vm', [], '--vm', /at least one --vm/],
  ['unknown flag', ['--vm', VM, '--verbose'], '--verbose', /unknown flag/],
  ['positional argument', ['--vm', VM, 'extra'], 'extra', /unexpected argument/],
  ['missing value', ['--vm'], '--vm', /missing value/],
  ['missing value before a flag', ['--vm', '--forward', 'x'], '--vm', /missing value/],
  ['vm: not key=value', ['--vm', 'guest-cid=3,socket'], '--vm', /not key=value/],
  ['vm: unknown key', ['--vm', `${VM},cid=4`], '--vm', /unknown key "cid"/],
  ['vm: key twice', ['--vm', `${VM},socket=/y`], '--vm', /socket given twice/],
  ['vm: no guest-cid', ['--vm', 'socket=/x'], '--vm', /guest-cid is missing/],
  ['vm: no socket', ['--vm', 'guest-cid=3'], '--vm', /socket is missing/],
  ['vm: reserved CID 2', ['--vm', 'guest-cid=2,socket=/x'], '--vm', /reserved or out of range/],
  ['vm: CID 4294967295', ['--vm', 'guest-cid=4294967295,socket=/x'], '--vm', /reserved or out of range/],
  ['vm: CID not a number', ['--vm', 'guest-cid=three,socket=/x'], '--vm', /not a decimal number/],
  ['vm: empty socket', ['--vm', 'guest-cid=3,socket='], '--vm', /socket is empty/],
  ['vm: socket path too long', ['--vm', `guest-cid=3,socket=/${'x'.repeat(120)}`], '--vm', /more than the 107/],
  ['vm: uds-path too long for _P', ['--vm', `${VM},uds-path=/${'x'.repeat(100)}`], '--vm', /more than the 96/],
  ['vm: socket equals uds-path', ['--vm', 'guest-cid=3,socket=/x,uds-path=/x'], '--vm', /same path/],
  ['vm: duplicate CID', ['--vm', VM, '--vm', 'guest-cid=3,socket=/other'], '--vm', /used by two/],
  ['vm: duplicate path', ['--vm', VM, '--vm', 'guest-cid=4,socket=/tmp/s.sock'], '--vm', /used twice/],
  ['forward: no =', ['--vm', VM, '--forward', '127.0.0.1:8080'], '--forward', /HOST:PORT=CID:GUEST_PORT/],
  ['forward: no port', ['--vm', VM, '--forward', '127.0.0.1=3:80'], '--forward', /not HOST:PORT/],
  ['forward: port 0', ['--vm', VM, '--forward', '127.0.0.1:0=3:80'], '--forward', /listen port 0 is out of range/],
  ['forward: port 65536', ['--vm', VM, '--forward', '127.0.0.1:65536=3:80'], '--forward', /out of range/],
  ['forward: bare IPv6', ['--vm', VM, '--forward', '::1:8080=3:80'], '--forward', /in brackets/],
  ['forward: bad bracket', ['--vm', VM, '--forward', '[1.2.3.4]:8080=3:80'], '--forward', /not an IPv6/],
  ['forward: bad host', ['--vm', VM, '--forward', 'a b:8080=3:80'], '--forward', /not an IP address or host name/],
  ['forward: bad target', ['--vm', VM, '--forward', '127.0.0.1:8080=3'], '--forward', /not CID:GUEST_PORT/],
  ['forward: guest port any', ['--vm', VM, '--forward', '127.0.0.1:8080=3:4294967295'], '--forward', /guest port .* out of range/],
  ['forward: undeclared CID', ['--vm', VM, '--forward', '127.0.0.1:8080=9:80'], '--forward', /CID 9 is not declared/],
  ['forward: twice the same address', ['--vm', VM, '--forward', '127.0.0.1:8080=3:80', '--forward', '127.0.0.1:8080=3:81'], '--forward', /forwarded twice/],
];

for (const [name, argv, flag, message] of BAD) {
  test(`refused: ${name}`, (t) => {
    const e = t.throws(() => parseArgs(argv), { instanceOf: CliUsageError });
    t.is(e?.flag, flag);
    t.is(e?.code, 'ERR_VSOCK_CLI_USAGE');
    t.regex(e?.message ?? '', message);
    t.true(e?.message.startsWith(flag) || e?.message.startsWith(JSON.stringify(flag)));
  });
}

test('main: bad flag -> message naming the flag on stderr, status 2; --help -> status 0', async (t) => {
  let out = '';
  let err = '';
  const io = { stdout: (s: string) => (out += s), stderr: (s: string) => (err += s) };
  t.is(await main(['--vm', 'guest-cid=1,socket=/x'], io), 2);
  t.regex(err, /^vhost-user-vsock: --vm: guest-cid 1 is reserved/);
  t.is(out, '');
  err = '';
  t.is(await main(['--help'], io), 0);
  t.is(out, HELP_TEXT);
  for (const flag of ['--vm', 'guest-cid', 'socket', 'uds-path', '--forward', '--help']) t.true(HELP_TEXT.includes(flag), flag);
});

test('startDaemon: one device per VM behind the vhost-user factory; hybrid socket and TCP forward up, then down', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-daemon-'));
  const started: string[] = [];
  let closed = 0;
  const factory: VhostUserServerFactory = async ({ socketPath, model }) => {
    started.push(`${socketPath} ${model.name} ${model.deviceId}`);
    return { close: async () => void closed++ };
  };
  const { config } = parseArgs([
    '--vm',
    `guest-cid=3,socket=${join(dir, 'vhost3.sock')},uds-path=${join(dir, 'vm3.vsock')}`,
    '--vm',
    `guest-cid=4,socket=${join(dir, 'vhost4.sock')}`,
    '--forward',
    '127.0.0.1:1=3:80',
  ]) as { help: false; config: Parameters<typeof startDaemon>[0] };
  config.forwards[0]!.listenPort = 0; // any free port for the test
  const logs: string[] = [];
  const d = await startDaemon(config, { createVhostUserServer: factory, log: (m) => logs.push(m) });
  try {
    t.deepEqual(started, [`${join(dir, 'vhost3.sock')} virtio-vsock 19`, `${join(dir, 'vhost4.sock')} virtio-vsock 19`]);
    t.deepEqual([...d.devices.keys()], [3, 4]);
    t.is(d.devices.get(4)!.guestCid, 4);
    t.true(existsSync(join(dir, 'vm3.vsock')));
    const port = d.forwards[0]!.address()!.port;
    // Nothing drives the device (no VM attached): the TCP connection is accepted and
    // reset at once, not left waiting for the guest.
    const c = connect({ host: '127.0.0.1', port });
    const how = await new Promise<string>((resolve) => {
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      c.once('close', () => resolve('close'));
    });
    t.true(how === 'ECONNRESET' || how === 'close', how);
    c.destroy();
  } finally {
    await d.close();
    rmSync(dir, { recursive: true, force: true });
  }
  t.is(closed, 2);
});

test('startDaemon: a failure part-way closes what was started', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-daemon-'));
  let closed = 0;
  const factory: VhostUserServerFactory = async ({ socketPath }) => {
    if (socketPath.endsWith('b.sock')) throw Object.assign(new Error('address in use'), { code: 'EADDRINUSE' });
    return { close: async () => void closed++ };
  };
  try {
    const { config } = parseArgs(['--vm', `guest-cid=3,socket=${join(dir, 'a.sock')},uds-path=${join(dir, 'a.vsock')}`, '--vm', `guest-cid=4,socket=${join(dir, 'b.sock')}`]) as {
      help: false;
      config: Parameters<typeof startDaemon>[0];
    };
    await t.throwsAsync(startDaemon(config, { createVhostUserServer: factory, log: () => {} }), { message: /address in use/ });
    t.is(closed, 1);
    t.false(existsSync(join(dir, 'a.vsock'))); // the hybrid listener was closed (socket file removed)
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the CLI as a process: bad flag exits 2, --help exits 0', (t) => {
  const cli = fileURLToPath(new URL('../drivers/virtio-vsock/daemon/cli.js', import.meta.url));
  const run = (args: string[]) =>
    spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(cli)}); process.exitCode = await m.main(${JSON.stringify(args)});`], {
      encoding: 'utf8',
      timeout: 60_000,
    });
  const bad = run(['--forward', 'nowhere']);
  t.is(bad.status, 2);
  t.regex(bad.stderr, /--forward/);
  const help = run(['--help']);
  t.is(help.status, 0);
  t.regex(help.stdout, /^Usage: vhost-user-vsock/);
});

test('--ring: auto (default) offers the packed layout beside split (bit 34), split offers split only; anything else is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-daemon-'));
  const factory: VhostUserServerFactory = async () => ({ close: async () => {} });
  const packedBit = 1n << 34n;
  try {
    for (const [flags, offered] of [[[], true], [['--ring', 'auto'], true], [['--ring=split'], false]] as const) {
      const { config } = parseArgs(['--vm', `guest-cid=3,socket=${join(dir, 'v.sock')}`, ...flags]) as { help: false; config: Parameters<typeof startDaemon>[0] };
      const d = await startDaemon(config, { createVhostUserServer: factory, log: () => {} });
      try {
        t.is((d.devices.get(3)!.features & packedBit) !== 0n, offered, flags.join(' ') || 'no --ring');
      } finally {
        await d.close();
      }
    }
    const e = t.throws(() => parseArgs(['--vm', `guest-cid=3,socket=${join(dir, 'v.sock')}`, '--ring', 'packed']), { instanceOf: CliUsageError });
    t.is(e?.message, '--ring: "packed" is not one of auto, split');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a VM alone on the loop gets large turns; several VMs on one loop get the shorter shared turns (device/constants.ts)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-daemon-'));
  const factory: VhostUserServerFactory = async () => ({ close: async () => {} });
  try {
    for (const [cids, share] of [[[3], TURN_SHARE_ALONE], [[3, 4], TURN_SHARE_SHARED]] as const) {
      const { config } = parseArgs(cids.flatMap((c) => ['--vm', `guest-cid=${c},socket=${join(dir, `v${c}.sock`)}`])) as { help: false; config: Parameters<typeof startDaemon>[0] };
      const d = await startDaemon(config, { createVhostUserServer: factory, log: () => {} });
      try {
        for (const c of cids) t.is(d.devices.get(c)!.turnShare, share, `${cids.length} VM(s)`);
      } finally {
        await d.close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
