// Command line for the guest images and the launcher (for people; tests use the API).
//
//   node dist/appliance/qemu/cli.js build
//       builds (or finds cached) both images and prints paths, sizes and times
//   node dist/appliance/qemu/cli.js linux [--vsock=SOCKET] [--fs=SOCKET:TAG] [--mem=MiB]
//       boots the stock-Linux guest with this terminal as its console (type commands,
//       `poweroff -f` to leave; there is no prompt)
//   node dist/appliance/qemu/cli.js node MAIN.js [--vsock=SOCKET] [--fs=SOCKET:TAG] [--mem=MiB] [--hugepages=N] [-- ARGS...]
//       runs MAIN.js as the node guest's program; exits with its status

import { buildLinuxGuest } from '../image/linux-guest.js';
import { buildNodeGuest } from '../image/node-guest.js';
import { launchQemu, type QemuOptions } from './launch.js';

function usage(): never {
  process.stderr.write(
    'usage: cli.js build | linux [--vsock=S] [--fs=S:TAG] [--mem=MiB] | node MAIN.js [--vsock=S] [--fs=S:TAG] [--mem=MiB] [--hugepages=N] [-- ARGS...]\n',
  );
  process.exit(2);
}

interface Parsed {
  positional: string[];
  rest: string[];
  launch: Partial<QemuOptions>;
  hugepages: number | undefined;
}

function parse(argv: string[]): Parsed {
  const out: Parsed = { positional: [], rest: [], launch: {}, hugepages: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.rest = argv.slice(i + 1);
      break;
    }
    const m = /^--([a-z]+)=(.*)$/.exec(a);
    if (!m) {
      out.positional.push(a);
      continue;
    }
    const [, k, v] = m as unknown as [string, string, string];
    if (k === 'vsock') out.launch.vhostUserVsock = { socket: v };
    else if (k === 'fs') {
      const at = v.lastIndexOf(':');
      if (at <= 0) usage();
      out.launch.virtiofs = { socket: v.slice(0, at), tag: v.slice(at + 1) };
    } else if (k === 'mem') out.launch.memoryMiB = Number(v);
    else if (k === 'hugepages') out.hugepages = Number(v);
    else usage();
  }
  return out;
}

async function main(): Promise<void> {
  const [cmd, ...argv] = process.argv.slice(2);
  const p = parse(argv);
  if (cmd === 'build') {
    for (const [name, build] of [
      ['linux', () => buildLinuxGuest()],
      ['node (this script as main)', () => buildNodeGuest({ main: process.argv[1]!, name: 'node-guest-cli' })],
    ] as const) {
      const t0 = Date.now();
      const img = await build();
      const i = img.initramfs;
      console.log(`${name}: ${i.path} ${(i.size / 1e6).toFixed(1)} MB ${i.cached ? 'cached' : 'built'} in ${Date.now() - t0} ms`);
      console.log(`  kernel ${img.kernel} (${img.kernelVersion})\n  append ${img.append}\n  modules ${i.modules.map((m) => m.name).join(' ')}`);
    }
    return;
  }
  if (cmd === 'linux') {
    const img = await buildLinuxGuest();
    const q = launchQemu({ ...p.launch, kernel: img.kernel, initrd: img.initrd, append: img.append, onConsole: (c) => process.stdout.write(c) });
    process.stdin.on('data', (d: Buffer) => q.write(d));
    const e = await q.exited;
    process.stdin.pause();
    process.exit(e.qemuCode ?? 1);
  }
  if (cmd === 'node') {
    const main = p.positional[0];
    if (!main) usage();
    const img = await buildNodeGuest({ main, args: p.rest, ...(p.hugepages !== undefined ? { hugepages: p.hugepages } : {}) });
    const q = launchQemu({ ...p.launch, kernel: img.kernel, initrd: img.initrd, append: img.append, onLine: (l) => console.log(l) });
    const stop = (): void => void q.stop();
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    const e = await q.exited;
    process.exit(e.status ?? 1);
  }
  usage();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
