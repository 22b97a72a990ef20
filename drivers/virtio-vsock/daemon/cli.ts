// vhost-user-vsock: the daemon's command line. main(argv) parses, starts the daemon and
// runs until SIGINT or SIGTERM. Exit status: 0 (done or --help), 1 (could not start:
// the message names the socket, address or file), 2 (bad flags or config file,
// reported with the flag, or the file and line, and why); 1 also when a VM thread dies
// (threaded-daemon.ts).
import { CliUsageError, HELP_TEXT, parseArgs } from './config.js';
import { ConfigFileError } from './config-file.js';
import type { DaemonDeps } from './daemon.js';
import { startDaemonAsConfigured } from './threaded-daemon.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const processIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

/**
 * Runs the CLI; resolves with the exit status. A started daemon runs until the promise
 * from `until` settles (default: SIGINT or SIGTERM).
 */
export async function main(
  argv: readonly string[],
  io: CliIo = processIo,
  deps: DaemonDeps = {},
  until: () => Promise<unknown> = signalled,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs(argv);
  } catch (e) {
    if (e instanceof CliUsageError || e instanceof ConfigFileError) {
      io.stderr(`vhost-user-vsock: ${e instanceof ConfigFileError ? '--config ' : ''}${e.message}\nTry 'vhost-user-vsock --help'.\n`);
      return 2;
    }
    throw e;
  }
  if (parsed.help) {
    io.stdout(HELP_TEXT);
    return 0;
  }
  let daemon;
  try {
    daemon = await startDaemonAsConfigured(parsed.config, { log: (line) => io.stderr(`${line}\n`), ...deps });
  } catch (e) {
    io.stderr(`vhost-user-vsock: cannot start: ${(e as Error).message}\n`);
    return 1;
  }
  daemon.logger.log('info', null, 'running (SIGINT or SIGTERM stops)');
  const failure = await Promise.race([until().then(() => null), daemon.failed]);
  if (failure) daemon.logger.log('error', null, `${failure.message}; stopping every VM`);
  await daemon.close();
  return failure ? 1 : 0;
}

function signalled(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}
