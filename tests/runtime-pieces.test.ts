// The runtime's pieces that need no guest: the launcher's flags (host writes, guest
// reads), the program's exit status, which console lines are the program's output, the
// image spec of a program, and launch.sh of `tsvirtio build` (sh -n, sockets checked).
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatLauncherArgs, parseLauncherArgs } from '../appliance/runtime/launcher-args.js';
import { exitStatusOf, runProgram } from '../appliance/runtime/program-loader.js';
import { launchScript } from '../appliance/runtime/host/launch-script.js';
import { programOutputFilter } from '../appliance/runtime/host/program-output.js';
import { programGuest, programName } from '../appliance/runtime/host/program-guest.js';

test('launcher flags: what the host writes the guest reads back; the program arguments after --', (t) => {
  const a = { shares: 2, dmaPages: 10, txMode: 'zero-copy' as const, pollWindowMs: 0, programArgs: ['--port', '80', '--'] };
  t.deepEqual(parseLauncherArgs(formatLauncherArgs(a)), a);
  t.deepEqual(parseLauncherArgs([]), { shares: 0, dmaPages: 6, txMode: 'auto', pollWindowMs: 5, programArgs: [] });
  t.is(parseLauncherArgs(['--shares=1']).dmaPages, 8);
  t.throws(() => parseLauncherArgs(['--shares=9']), { message: '--shares: expected 0..8, got "9"' });
  t.throws(() => parseLauncherArgs(['--tx-mode=fast']), { message: /^--tx-mode: expected one of auto, two-copy, single-copy, zero-copy/ });
  t.throws(() => parseLauncherArgs(['--port=80']), { message: 'unknown flag "--port" (the program\'s own arguments go after --)' });
});

test("exit status: main's number, nothing (process.exitCode or 0), anything else 1 with the reason", async (t) => {
  t.deepEqual(exitStatusOf(7, undefined), { status: 7, problem: null });
  t.deepEqual(exitStatusOf(undefined, undefined), { status: 0, problem: null });
  t.deepEqual(exitStatusOf(undefined, 3), { status: 3, problem: null });
  t.deepEqual(exitStatusOf(300, undefined), { status: 1, problem: 'main() returned 300, not an exit status 0..255 (or nothing)' });
  t.deepEqual(exitStatusOf('done', undefined), { status: 1, problem: 'main() returned string, not an exit status 0..255 (or nothing)' });
  const logged: string[] = [];
  t.is(await runProgram({ default: async () => 4 }, (l) => logged.push(l)), 4);
  t.is(await runProgram({ default: () => 1.5 }, (l) => logged.push(l)), 1);
  t.deepEqual(logged, ['main() returned 1.5, not an exit status 0..255 (or nothing)']);
  await t.throwsAsync(runProgram({ default: async () => Promise.reject(new Error('boom')) }, () => {}), { message: 'boom' });
  // Without a main the program runs until exit(): the promise stays pending.
  const never = runProgram({ other: 1 }, () => {});
  t.is(await Promise.race([never, new Promise((r) => setImmediate(() => r('pending')))]), 'pending');
});

test("program output: the lines after program-start, without the runtime's own lines and markers, up to the exit marker", (t) => {
  const out = programOutputFilter();
  const lines = [
    'tsvirtio-stage: init 0.39',
    'tsvirtio-runtime: node started 0.82 s after the kernel',
    'a kernel line before the program',
    'tsvirtio-stage: program-start 2.036',
    'json-api: listening on vsock port 80',
    'tsvirtio-runtime: exit 5',
    'PANIC: tsvirtio-runtime: uncaught exception: Error: x',
    '',
    'no newlinetsvirtio-exit: 5',
    'reboot: Restarting system',
  ];
  t.deepEqual(
    lines.map(out).filter((l) => l !== null),
    ['json-api: listening on vsock port 80', 'PANIC: tsvirtio-runtime: uncaught exception: Error: x', '', 'no newline'],
  );
});

test('a program image: the runtime bundles, the program and the loader as files, DMA pages by shares', (t) => {
  const g = programGuest({ app: '/x/my server.ts', bundle: '/cache/p.mjs', shares: 1, txMode: 'auto', programArgs: ['--n', '3'] });
  t.regex(programName('/x/my server.ts'), /^program-my_server-[0-9a-f]{8}$/);
  t.not(programName('/x/my server.ts'), programName('/y/my server.ts'));
  t.is(g.name, programName('/x/my server.ts'));
  t.regex(g.bundle, /dist\/bundles\/runtime\.js$/);
  t.regex(g.snapshotEntry!, /dist\/bundles\/runtime\.cjs$/);
  t.is(g.snapshotName, 'runtime');
  t.is(g.hugepages, 8);
  t.deepEqual(g.args, ['--shares=1', '--dma-pages=8', '--tx-mode=auto', '--poll-window-ms=5', '--', '--n', '3']);
  t.deepEqual(g.files!.map((f) => f.guest), ['/app/program.mjs', '/app/load-program.cjs']);
});

test('launch.sh: valid sh, QEMU options with the files and sockets as variables, refuses a missing socket', (t) => {
  const append = "console=ttyS0 hugepages=8 tsc_early_khz=2994000 TSVIRTIO_ARG_0=--shares=1 TSVIRTIO_ARG_1=\"two words\" TSVIRTIO_ARG_2=it's";
  const script = launchScript({ app: 'examples/x.ts', machine: 'microvm', append, memoryMiB: 96, tags: ['site'] });
  const dir = mkdtempSync(join(tmpdir(), 'launch-sh-'));
  try {
    const path = join(dir, 'launch.sh');
    writeFileSync(path, script, { mode: 0o755 });
    t.is(spawnSync('sh', ['-n', path]).status, 0);
    t.regex(script, /^#!\/bin\/sh\n# Boots examples\/x\.ts/);
    t.regex(script, /# usage: \.\/launch\.sh VSOCK_SOCKET FS_SOCKET_1\n/);
    t.regex(script, /FS_SOCKET_1 +virtiofsd's socket for the shared folder tagged "site"/);
    t.regex(script, /npx vhost-user-vsock --vm guest-cid=3,socket=/);
    t.regex(script, /vhost-device-vsock --vm guest-cid=3/);
    t.regex(script, / {2}-kernel "\$here\/vmlinux" \\\n/);
    t.regex(script, / {2}-drive id=root,file="\$here\/rootfs\.squashfs",format=raw/);
    t.regex(script, / {2}-chardev socket,id=vsock0,path="\$vsock" \\\n/);
    t.regex(script, / {2}-chardev socket,id=fs0,path="\$fs0" \\\n {2}-device vhost-user-fs-device,chardev=fs0,tag=site \\\n/);
    t.regex(script, /-chardev stdio,id=console,signal=on/);
    t.regex(script, / {2}-m 96M \\\n/);
    t.notRegex(script, /tsc_early_khz=2994000/);
    // The kernel command line survives sh quoting as it was (less the host's TSC rate).
    const echoed = spawnSync('sh', ['-c', `${/^append=.*$/m.exec(script)![0]}\nprintf '%s' "$append"`], { encoding: 'utf8' }).stdout;
    t.is(echoed, append.replace(' tsc_early_khz=2994000', ''));
    const missing = spawnSync('sh', [path], { encoding: 'utf8', env: { ...process.env, TSVIRTIO_VSOCK_SOCKET: '' } });
    t.is(missing.status, 2);
    t.regex(missing.stderr, /launch\.sh: vhost-user-vsock socket missing \(usage: .* VSOCK_SOCKET FS_SOCKET_1\)/);
    const notSocket = spawnSync('sh', [path, path, join(dir, 'nope')], { encoding: 'utf8' });
    t.is(notSocket.status, 2);
    t.regex(notSocket.stderr, /vhost-user-vsock socket .*launch\.sh is not a socket: start the back end first/);
    const q35 = launchScript({ app: 'x.js', machine: 'q35', append: 'console=ttyS0', memoryMiB: 1024, tags: [] });
    t.regex(q35, / {2}-kernel "\$here\/vmlinuz" \\\n {2}-initrd "\$here\/initramfs\.cpio" \\\n/);
    t.notRegex(q35, /fs0/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
