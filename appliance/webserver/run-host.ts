// The webserver on the host: node:net on 127.0.0.1 and files from a folder.
//   node dist/appliance/webserver/run-host.js [--root DIR] [--port N] [--host ADDR] [--no-cache] [--log]
// Bad flags: a message naming the flag, exit status 2.
import { fileURLToPath } from 'node:url';
import { runWebserver } from './run-guest.js';
import { listenNet } from './listen/net-listen.js';
import { NodeSiteFiles } from './files/node-site-files.js';

export interface HostWebserverArgs {
  root: string;
  port: number;
  host: string;
  cache: boolean;
  log: boolean;
}

export const DEFAULT_SITE_ROOT = fileURLToPath(new URL('../../../appliance/site/', import.meta.url));

const USAGE = 'usage: run-host.js [--root DIR] [--port N] [--host ADDR] [--no-cache] [--log]';

/** Parses the command line; throws Error with a message naming the bad flag. */
export function parseHostArgs(argv: readonly string[]): HostWebserverArgs {
  const args: HostWebserverArgs = { root: DEFAULT_SITE_ROOT, port: 8080, host: '127.0.0.1', cache: true, log: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--root':
        args.root = value();
        break;
      case '--port': {
        const v = value();
        if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new Error(`--port must be a TCP port (0-65535), got ${JSON.stringify(v)}`);
        args.port = Number(v);
        break;
      }
      case '--host':
        args.host = value();
        break;
      case '--no-cache':
        args.cache = false;
        break;
      case '--log':
        args.log = true;
        break;
      case '--help':
        throw new Error(USAGE);
      default:
        throw new Error(`unknown flag ${JSON.stringify(flag)}\n${USAGE}`);
    }
  }
  return args;
}

async function main(): Promise<void> {
  let args: HostWebserverArgs;
  try {
    args = parseHostArgs(process.argv.slice(2));
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
  const running = await runWebserver({
    port: args.port,
    files: new NodeSiteFiles(args.root),
    cache: args.cache ? undefined : false,
    log: args.log,
    listen: async (port, onSocket) => {
      const h = await listenNet(port, onSocket, args.host);
      console.log(`webserver: http://${args.host}:${h.port}/ serving ${args.root}`);
      return h;
    },
  });
  const stop = () => {
    void running.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
