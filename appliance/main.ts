// `npm start`: the whole appliance on this machine. Builds the guest image when it is
// missing, starts virtiofsd on the site folder, the vhost-user-vsock daemon (in this
// process) with TCP forwards 127.0.0.1:PORT -> guest:80 (webserver) and
// 127.0.0.1:PORT+1 -> guest:5000 (ping-pong), boots QEMU, prints the URL once the
// guest's webserver answers, and serves until Ctrl-C / SIGTERM. Everything it started
// is stopped on the way out (exit 0), on a guest crash (exit 1) and when a part fails
// to start (exit 1, naming the part). Bad flags: exit 2.
import { resolve } from 'node:path';
import type { Machine } from './image/guest.js';
import { DEFAULT_MACHINE, DEFAULT_MEMORY_MIB, DEFAULT_SITE, type RunningAppliance, StartError, startAppliance } from './run/appliance.js';

export const USAGE = `usage: npm start -- [--port N] [--site DIR] [--machine microvm|q35] [--memory MiB] [--drivers ours|kernel] [--console] [--help]

  --port N        host TCP port of the website (default 8080); ping-pong on N+1
  --site DIR      folder served (default appliance/site)
  --machine M     microvm (default: our kernel, virtio-mmio devices, boots in about
                  2 s) or q35 (PCI devices, Debian's kernel: for PCI-only setups)
  --memory MiB    guest RAM (default 128 on microvm, 1024 on q35); less than the
                  image needs is refused before the launch, with what it needs
  --drivers D     ours (default: our TypeScript drivers) or kernel (Linux's own;
                  q35 only)
  --console       copy the guest's serial console to stderr
  --help          this text
`;

/** QEMU's own floor; the image's real need is checked once it is built (run/guest-memory.ts). */
export const MIN_MEMORY_MIB = 64;

export interface MainArgs {
  port: number;
  site: string;
  machine: Machine;
  /** null: the machine's default. */
  memoryMiB: number | null;
  drivers: 'ours' | 'kernel';
  console: boolean;
  help: boolean;
}

export class UsageError extends Error {}

export function parseMainArgs(argv: readonly string[]): MainArgs {
  const a: MainArgs = { port: 8080, site: DEFAULT_SITE, machine: DEFAULT_MACHINE, memoryMiB: null, drivers: 'ours', console: false, help: false };
  let machineGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const value = (): string => {
      if (eq >= 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag}: needs a value`);
      return v;
    };
    switch (flag) {
      case '--port': {
        const v = value();
        if (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > 65534) throw new UsageError(`--port: expected a TCP port 1..65534, got ${JSON.stringify(v)}`);
        a.port = Number(v);
        break;
      }
      case '--site': {
        const v = value();
        if (v === '') throw new UsageError('--site: empty path');
        a.site = resolve(v);
        break;
      }
      case '--memory': {
        const v = value();
        if (!/^\d{1,6}$/.test(v) || Number(v) < MIN_MEMORY_MIB) throw new UsageError(`--memory: expected MiB, at least ${MIN_MEMORY_MIB}, got ${JSON.stringify(v)}`);
        a.memoryMiB = Number(v);
        break;
      }
      case '--machine': {
        const v = value();
        if (v !== 'microvm' && v !== 'q35') throw new UsageError(`--machine: expected microvm or q35, got ${JSON.stringify(v)}`);
        a.machine = v;
        machineGiven = true;
        break;
      }
      case '--drivers': {
        const v = value();
        if (v !== 'ours' && v !== 'kernel') throw new UsageError(`--drivers: expected ours or kernel, got ${JSON.stringify(v)}`);
        a.drivers = v;
        break;
      }
      case '--console':
        a.console = true;
        break;
      case '--help':
      case '-h':
        a.help = true;
        break;
      default:
        throw new UsageError(`unknown flag ${JSON.stringify(arg)}`);
    }
  }
  // Linux's own vsock and virtiofs drivers exist only in the q35 image (Debian's kernel).
  if (a.drivers === 'kernel') {
    if (machineGiven && a.machine !== 'q35') throw new UsageError('--drivers kernel runs on --machine q35 only (our microvm kernel has no vsock or virtiofs driver)');
    a.machine = 'q35';
  }
  return a;
}

async function main(): Promise<number> {
  let args: MainArgs;
  try {
    args = parseMainArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`appliance: ${e.message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const t0 = performance.now();
  const stamp = (): string => `[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s]`;
  const say = (line: string): void => {
    process.stdout.write(`${stamp()} ${line}\n`);
  };

  // A signal during start-up: stop what is started, then exit 0.
  let signalled: NodeJS.Signals | null = null;
  let wake: () => void = () => {};
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) return;
    signalled = sig;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let app: RunningAppliance | null = null;
  const starting = startAppliance({
    port: args.port,
    site: args.site,
    machine: args.machine,
    memoryMiB: args.memoryMiB ?? DEFAULT_MEMORY_MIB[args.machine],
    drivers: args.drivers,
    echoConsole: args.console,
    progress: say,
    daemonLog: args.console ? (l) => process.stderr.write(`[daemon] ${l}\n`) : undefined,
  });
  const interrupted = new Promise<'signal'>((r) => {
    wake = () => r('signal');
  });
  try {
    const first = await Promise.race([starting, interrupted]);
    if (first === 'signal') {
      say(`${signalled}: stopping while starting…`);
      try {
        const late = await starting;
        await late.stop();
      } catch {
        // start-up failed on its own and cleaned up after itself
      }
      say('stopped');
      return 0;
    }
    app = first;
  } catch (e) {
    if (e instanceof StartError) {
      process.stderr.write(`appliance: cannot start ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`appliance: cannot start: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }

  const steps = app.timeline.waterfall();
  const firstResponse = app.timeline.at('first-response');
  if (firstResponse !== null) say(`booted in ${(firstResponse / 1000).toFixed(2)} s: ${steps.map((x) => `${x.step} ${(x.ms / 1000).toFixed(2)}`).join(', ')}`);
  say(`qemu pid ${app.qemuPid}, virtiofsd pid ${app.virtiofsdPid}, daemon in pid ${process.pid}, sockets in ${app.socketDir}`);
  say(`ping-pong: 127.0.0.1:${app.pingPongPort} (node dist/appliance/pingpong/client.js --connect 127.0.0.1:${app.pingPongPort})`);
  say(`serving ${args.site} at ${app.url}  (Ctrl-C stops)`);

  const outcome = await Promise.race([interrupted, app.crashed]);
  if (outcome === 'signal') {
    say(`${signalled}: stopping…`);
    await app.stop();
    say('stopped');
    return 0;
  }
  process.stderr.write(`appliance: the guest stopped unexpectedly: ${outcome}\n`);
  await app.stop();
  return 1;
}

process.exitCode = await main();
// Nothing of ours is left running; leave no handle keeping the process alive.
setTimeout(() => process.exit(), 200).unref();
