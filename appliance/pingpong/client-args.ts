// The ping-pong client's command line:
//   --connect HOST:PORT | --uds PATH:GUESTPORT   where to (exactly one)
//   --sizes 8192,16384                           message sizes in bytes (default 8192,16384)
//   --iterations N                               round trips per size (default 1000)
//   --warmup N                                   unmeasured round trips first (default 10)
//   --json                                       print JSON instead of tables
//   --timeout-ms N                               give up when one round trip takes longer (default 10000)

export type ClientTarget = { kind: 'tcp'; host: string; port: number } | { kind: 'uds'; path: string; guestPort: number };

export interface ClientArgs {
  target: ClientTarget;
  sizes: number[];
  iterations: number;
  warmup: number;
  json: boolean;
  timeoutMs: number;
  /** No progress lines on stderr. */
  quiet: boolean;
}

export const CLIENT_USAGE =
  'usage: client.js (--connect HOST:PORT | --uds PATH:GUESTPORT) [--sizes 8192,16384] [--iterations N] [--warmup N] [--timeout-ms N] [--json] [--quiet] [--help]';

/** --help: what each flag does. */
export const CLIENT_HELP = `${CLIENT_USAGE}

Measures round trips to the appliance's ping-pong (echo) service: one connection, one
message at a time, each echoed back before the next is sent.

  --connect HOST:PORT     through a TCP forward of the vsock daemon (npm start prints it)
  --uds PATH:GUESTPORT    through the daemon's hybrid vsock Unix socket ("CONNECT PORT")
  --sizes LIST            message sizes in bytes, comma-separated (default 8192,16384)
  --iterations N          measured round trips per size (default 1000)
  --warmup N              unmeasured round trips first, per size (default 10)
  --timeout-ms N          give up when one round trip takes longer (default 10000)
  --json                  print JSON instead of tables
  --quiet                 no progress lines on stderr
  --help                  this text
`;

/** Most bytes in one message (16 MiB). */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export class ClientArgsError extends Error {
  constructor(
    readonly flag: string,
    message: string,
  ) {
    super(`${flag}: ${message}`);
    this.name = 'ClientArgsError';
  }
}

/** True when the command line asks for the help text (answered before anything else is checked). */
export function wantsHelp(argv: readonly string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

export function parseClientArgs(argv: readonly string[]): ClientArgs {
  let target: ClientTarget | null = null;
  const args: Omit<ClientArgs, 'target'> = { sizes: [8192, 16384], iterations: 1000, warmup: 10, json: false, timeoutMs: 10_000, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new ClientArgsError(flag, 'needs a value');
      return v;
    };
    switch (flag) {
      case '--connect': {
        if (target !== null) throw new ClientArgsError(flag, 'give one of --connect and --uds, once');
        const v = value();
        const m = /^(.+):(\d{1,5})$/.exec(v);
        if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new ClientArgsError(flag, `expected HOST:PORT with a port 1-65535, got ${JSON.stringify(v)}`);
        target = { kind: 'tcp', host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
        break;
      }
      case '--uds': {
        if (target !== null) throw new ClientArgsError(flag, 'give one of --connect and --uds, once');
        const v = value();
        const m = /^(.+):(\d{1,10})$/.exec(v);
        if (!m || Number(m[2]) > 0xffffffff) throw new ClientArgsError(flag, `expected PATH:GUESTPORT with a vsock port 0-4294967295, got ${JSON.stringify(v)}`);
        target = { kind: 'uds', path: m[1]!, guestPort: Number(m[2]) };
        break;
      }
      case '--sizes': {
        const v = value();
        const sizes = v.split(',').map((s) => s.trim());
        if (sizes.some((s) => !/^\d+$/.test(s) || Number(s) < 1 || Number(s) > MAX_MESSAGE_BYTES)) {
          throw new ClientArgsError(flag, `expected comma-separated sizes in bytes, 1-${MAX_MESSAGE_BYTES}, got ${JSON.stringify(v)}`);
        }
        args.sizes = sizes.map(Number);
        break;
      }
      case '--iterations':
        args.iterations = positiveInt(flag, value(), 1);
        break;
      case '--warmup':
        args.warmup = positiveInt(flag, value(), 0);
        break;
      case '--timeout-ms':
        args.timeoutMs = positiveInt(flag, value(), 1);
        break;
      case '--json':
        args.json = true;
        break;
      case '--quiet':
        args.quiet = true;
        break;
      default:
        throw new ClientArgsError(flag, `unknown flag\n${CLIENT_USAGE}`);
    }
  }
  if (target === null) throw new ClientArgsError('--connect', `one of --connect HOST:PORT or --uds PATH:GUESTPORT is required\n${CLIENT_USAGE}`);
  return { target, ...args };
}

function positiveInt(flag: string, v: string, min: number): number {
  if (!/^\d{1,9}$/.test(v) || Number(v) < min) throw new ClientArgsError(flag, `expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return Number(v);
}
