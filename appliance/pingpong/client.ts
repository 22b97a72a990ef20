// The ping-pong client (host side):
//   node dist/appliance/pingpong/client.js --connect 127.0.0.1:PORT | --uds PATH:GUESTPORT
//        [--sizes 8192,16384] [--iterations N] [--warmup N] [--timeout-ms N] [--json] [--quiet]
// Prints p50/p90/p99/max and a histogram per size, or JSON with --json; progress lines on
// stderr while it runs (not with --quiet); --help explains the flags. Bad flags: a
// message naming the flag, exit status 2; a failed run: exit status 1.
import { type Socket, createConnection } from 'node:net';
import { fileURLToPath } from 'node:url';
import { CLIENT_HELP, type ClientArgs, ClientArgsError, type ClientTarget, parseClientArgs, wantsHelp } from './client-args.js';
import { connectHybridVsock } from './hybrid-connect.js';
import { formatPingPong, measurePingPong, pingPongJson } from './ping-pong-client.js';

export function connectTarget(target: ClientTarget, timeoutMs: number): Promise<Socket> {
  if (target.kind === 'uds') return connectHybridVsock(target.path, target.guestPort, timeoutMs);
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: target.host, port: target.port }, () => {
      s.off('error', reject);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export async function runClient(args: ClientArgs, onProgress?: (sizeBytes: number, done: number, of: number) => void): Promise<string> {
  const socket = await connectTarget(args.target, args.timeoutMs);
  try {
    const results = await measurePingPong(socket, { ...args, ...(onProgress ? { onProgress } : {}) });
    return args.json ? JSON.stringify(pingPongJson(results), null, 2) + '\n' : formatPingPong(results);
  } finally {
    socket.destroy();
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (wantsHelp(argv)) {
    process.stdout.write(CLIENT_HELP);
    return;
  }
  let args: ClientArgs;
  try {
    args = parseClientArgs(argv);
  } catch (err) {
    if (!(err instanceof ClientArgsError)) throw err;
    process.stderr.write(`ping-pong client: ${err.message}\n`);
    process.exit(2);
  }
  try {
    const progress = args.quiet ? undefined : (size: number, done: number, of: number): void => void process.stderr.write(`ping-pong client: ${size} bytes: ${done}/${of} round trips\n`);
    process.stdout.write(await runClient(args, progress));
  } catch (err) {
    process.stderr.write(`ping-pong client: ${(err as Error).message}\n`);
    process.exit(1);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
