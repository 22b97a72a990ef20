// The lingering test file report (tests/support/linger-report.ts): what it says of the
// handles that keep a process alive, a child process, a listening server and a socket.
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo } from 'node:net';
import { describeHandles } from './support/linger-report.js';

test('child processes by pid and command line, servers by address, sockets by both ends', async (t) => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  try {
    const lines = describeHandles((process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles());
    t.true(lines.includes(`ChildProcess pid ${child.pid}: sleep 30`), lines.join('\n'));
    t.true(lines.some((l) => l.startsWith('Server listening on ') && l.includes(`"port":${port}`)), lines.join('\n'));
    t.true(lines.includes(`Socket 127.0.0.1:${client.localPort} -> 127.0.0.1:${port}`), lines.join('\n'));
  } finally {
    client.destroy();
    server.close();
    child.kill('SIGKILL');
  }
});
