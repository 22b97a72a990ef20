// `tsvirtio run APP` after the flags are parsed and the tree is built: bundles the
// program, boots it behind the runtime (startGuest: image, one virtiofsd per --share,
// the vsock daemon with the --forward listeners, QEMU), copies the program's console
// output to stdout, and resolves with the program's exit status when it ends. Ctrl-C
// (SIGINT), SIGTERM and SIGHUP stop QEMU, the daemon and virtiofsd in that order
// (status 128 + the signal's number). tsvirtio's own lines go to stderr, prefixed
// "tsvirtio: ". A part that cannot start: its message and status 1.
import type { RunArgs } from '../../cli/run-args.js';
import { signalStatus, watchStopSignals } from '../../cli/stop-signals.js';
import { DEFAULT_MEMORY_MIB } from '../../run/machine-defaults.js';
import { type RunningGuest, StartError, startGuest } from '../../run/start-guest.js';
import { BundleError, bundleProgram } from './bundle-program.js';
import { PROGRAM_START_LINE, programOutputFilter } from './program-output.js';
import { programBundlePath, programGuest, shownPath } from './program-guest.js';

const say = (line: string): void => {
  process.stderr.write(`tsvirtio: ${line}\n`);
};

/** Runs the program of `args` (app set); resolves with the exit status of the command. */
export async function runProgramCommand(args: RunArgs): Promise<number> {
  const app = args.app!;
  const verbose = args.verbose ? say : () => {};
  const signals = watchStopSignals();
  try {
    const bundle = programBundlePath(app);
    try {
      await bundleProgram(app, bundle);
    } catch (e) {
      if (!(e instanceof BundleError)) throw e;
      process.stderr.write(`tsvirtio run: ${e.message}\n`);
      return 1;
    }
    const memoryMiB = args.memoryMiB ?? DEFAULT_MEMORY_MIB[args.machine];
    say(`booting ${shownPath(app)} (${args.machine}, ${memoryMiB} MiB)…`);
    const output = programOutputFilter();
    const starting = startGuest({
      program: programGuest({ app, bundle, shares: args.shares.length, txMode: args.txMode, programArgs: args.programArgs }),
      machine: args.machine,
      icu: args.icu,
      memoryMiB,
      shares: args.shares,
      forwards: args.forwards,
      readyLine: PROGRAM_START_LINE,
      echoConsole: args.console ? '[guest] ' : false,
      // With --console the whole console is on stderr already.
      onLine: args.console
        ? undefined
        : (line) => {
            const out = output(line);
            if (out !== null) process.stdout.write(`${out}\n`);
          },
      progress: verbose,
      ...(args.verbose ? { daemonLog: (l: string) => process.stderr.write(`[daemon] ${l}\n`) } : {}),
    });

    let guest: RunningGuest;
    try {
      const first = await Promise.race([starting, signals.received]);
      if (typeof first === 'string') {
        say(`${first}: stopping while starting…`);
        await starting.then((g) => g.stop()).catch(() => {}); // a failed start cleaned up after itself
        say('stopped');
        return signalStatus(first);
      }
      guest = first;
    } catch (e) {
      if (e instanceof StartError) {
        process.stderr.write(`tsvirtio run: cannot start ${e.message}\n`);
        return 1;
      }
      throw e;
    }

    for (const [i, f] of args.forwards.entries()) say(`forwarding ${hostPort(f.host, guest.forwardPorts[i]!)} -> the program's vsock port ${f.guestPort}`);
    for (const s of args.shares) say(`sharing ${s.dir} as ${JSON.stringify(s.tag)} (read-only)`);
    verbose(`qemu pid ${guest.qemu.pid}, virtiofsd pids ${guest.virtiofsdPids.join(' ') || 'none'}, daemon in pid ${process.pid}, sockets in ${guest.socketDir} (hybrid vsock: ${guest.hybridSocket})`);
    say(`program started ${((performance.now() - guest.launchedAt) / 1000).toFixed(1)} s after launch (Ctrl-C stops)`);

    const outcome = await Promise.race([guest.qemu.exited, signals.received, guest.virtiofsdDied.then((why) => ({ virtiofsd: why }))]);
    if (typeof outcome === 'string') {
      say(`${outcome}: stopping…`);
      await guest.stop();
      say('stopped');
      return signalStatus(outcome);
    }
    await guest.stop();
    if ('virtiofsd' in outcome) {
      process.stderr.write(`tsvirtio run: the guest stopped unexpectedly: ${outcome.virtiofsd}\n`);
      return 1;
    }
    if (outcome.guestStatus === null) {
      process.stderr.write(`tsvirtio run: the guest stopped unexpectedly: ${guest.describe(outcome)}\n`);
      return 1;
    }
    if (outcome.guestStatus !== 0 || args.verbose) say(`the program exited with status ${outcome.guestStatus}`);
    return outcome.guestStatus;
  } finally {
    signals.dispose();
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
