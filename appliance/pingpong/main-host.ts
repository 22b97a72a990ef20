// The ping-pong service on the host, over node:net (for trying the client):
//   node dist/appliance/pingpong/main-host.js [--port N]
import { fileURLToPath } from 'node:url';
import { listenNet } from '../webserver/listen/net-listen.js';
import { DEFAULT_PINGPONG_PORT, runPingPong } from './echo-server.js';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let port = DEFAULT_PINGPONG_PORT;
  if (argv.length > 0) {
    if (argv[0] !== '--port' || argv.length !== 2 || !/^\d{1,5}$/.test(argv[1]!) || Number(argv[1]) > 65535) {
      process.stderr.write(`ping-pong server: bad arguments ${JSON.stringify(argv.join(' '))}; usage: main-host.js [--port N]\n`);
      process.exit(2);
    }
    port = Number(argv[1]);
  }
  await runPingPong({
    port,
    log: (l) => console.log(l),
    listen: (p, onSocket) => listenNet(p, onSocket),
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
