// `npm start` (tsvirtio start): the whole appliance on this machine. Builds the guest
// image when it is missing, starts virtiofsd on the site folder, the vhost-user-vsock
// daemon (in this process) with TCP forwards 127.0.0.1:PORT -> guest:80 (webserver) and
// 127.0.0.1:PORT+1 -> guest:5000 (ping-pong), boots QEMU, prints the URL once the
// guest's webserver answers, and serves until Ctrl-C / SIGTERM. Everything it started
// is stopped on the way out (exit 0), on a guest crash (exit 1) and when a part fails
// to start (exit 1, naming the part). Bad flags: exit 2 (cli/start-args.ts).
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { type MainArgs, USAGE, UsageError, parseMainArgs } from './cli/start-args.js';
import { watchStopSignals } from './cli/stop-signals.js';
import { DEFAULT_MEMORY_MIB, DEFAULT_SITE, type RunningAppliance, StartError, startAppliance } from './run/appliance.js';

export { MIN_MEMORY_MIB, USAGE, UsageError, parseMainArgs, type MainArgs } from './cli/start-args.js';

/** Runs the appliance with parsed arguments; resolves with the exit status. */
export async function runStart(args: MainArgs): Promise<number> {
  const t0 = performance.now();
  const stamp = (): string => `[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s]`;
  const say = (line: string): void => {
    process.stdout.write(`${stamp()} ${line}\n`);
  };

  // A signal during start-up: stop what is started, then exit 0.
  const signals = watchStopSignals();

  let app: RunningAppliance | null = null;
  const starting = startAppliance({
    port: args.port,
    site: args.site ?? DEFAULT_SITE,
    machine: args.machine,
    icu: args.icu,
    memoryMiB: args.memoryMiB ?? DEFAULT_MEMORY_MIB[args.machine],
    drivers: args.drivers,
    ...(args.drivers === 'ours' ? { ring: args.ring } : {}),
    echoConsole: args.console,
    vmSnapshot: args.vmState,
    progress: say,
    daemonLog: args.console || args.verbose ? (l) => process.stderr.write(`[daemon] ${l}\n`) : undefined,
  });
  const interrupted = signals.received.then(() => 'signal' as const);
  try {
    const first = await Promise.race([starting, interrupted]);
    if (first === 'signal') {
      say(`${signals.signal}: stopping while starting…`);
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
  const how = app.vmState?.mode === 'restored' ? 'restored' : 'booted';
  if (firstResponse !== null) say(`${how} in ${(firstResponse / 1000).toFixed(2)} s: ${steps.map((x) => `${x.step} ${(x.ms / 1000).toFixed(2)}`).join(', ')}`);
  say(`qemu pid ${app.qemuPid}, virtiofsd pid ${app.virtiofsdPid}, daemon in pid ${process.pid}, sockets in ${app.socketDir}`);
  say(`ping-pong: 127.0.0.1:${app.pingPongPort} (node dist/appliance/pingpong/client.js --connect 127.0.0.1:${app.pingPongPort})`);
  say(`serving ${resolve(args.site ?? DEFAULT_SITE)} at ${app.url}  (Ctrl-C stops)`);

  const outcome = await Promise.race([interrupted, app.crashed]);
  if (outcome === 'signal') {
    say(`${signals.signal}: stopping…`);
    await app.stop();
    say('stopped');
    return 0;
  }
  process.stderr.write(`appliance: the guest stopped unexpectedly: ${outcome}\n`);
  await app.stop();
  return 1;
}

/** `node dist/appliance/main.js ARGS`: parse, then run. */
async function main(argv: readonly string[]): Promise<number> {
  let args: MainArgs;
  try {
    args = parseMainArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`appliance: ${e.message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  return runStart(args);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
  // Nothing of ours is left running; leave no handle keeping the process alive.
  setTimeout(() => process.exit(), 200).unref();
}
