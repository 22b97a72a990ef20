// examples/file-server under QEMU, one boot on microvm: `tsvirtio run
// examples/file-server/main.ts --share examples/file-server/files --forward
// 127.0.0.1:0=7000` answers each path with the shared file's bytes (read through
// virtiofsd and our virtio-fs driver) or a folder's listing; then SIGINT to the whole
// process group, as a terminal's Ctrl-C: one clean stop, status 130, nothing left.
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { qemuAvailable } from '../appliance/qemu/launch.js';
import { type RunningCommand, ROOT, alive, spawnTsvirtio } from './support/tsvirtio-run.js';

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const FILES = join(ROOT, 'examples', 'file-server', 'files');
const runnable = existsSync(join(ROOT, 'dist', 'bundles', 'runtime.js')) && qemuAvailable() && existsSync(VIRTIOFSD);
const serial = runnable ? test.serial : test.serial.skip;

let cmd: RunningCommand | null = null;
let started: Promise<number> | null = null;

function start(): Promise<number> {
  started ??= (async () => {
    cmd = spawnTsvirtio(['run', 'examples/file-server', '--share', 'examples/file-server/files', '--forward', '127.0.0.1:0=7000', '--verbose']);
    await cmd.waitFor(/program started .* \(Ctrl-C stops\)/, 'stderr');
    await cmd.waitFor(/^file-server: serving the share "share" on vsock port 7000$/m);
    return cmd.forwardPorts()[0]!;
  })();
  return started;
}

test.after.always(async () => {
  await cmd?.stop();
});

/** Sends `line` and a newline, returns everything until the guest closes. */
function ask(port: number, line: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => s.write(`${line}\n`));
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => {
      s.end();
      resolve(Buffer.concat(parts));
    });
    s.on('error', reject);
  });
}

serial('it says what it forwards and shares', async (t) => {
  const port = await start();
  t.regex(cmd!.stderr(), new RegExp(`tsvirtio: forwarding 127\\.0\\.0\\.1:${port} -> the program's vsock port 7000\\n`));
  t.regex(cmd!.stderr(), /tsvirtio: sharing .*examples\/file-server\/files as "share" \(read-only\)\n/);
});

serial("each shared file comes back byte for byte", async (t) => {
  const port = await start();
  for (const rel of ['hello.txt', 'notes/readme.md', 'notes/data.json', '/notes/../hello.txt']) {
    const got = await ask(port, rel);
    t.true(got.equals(readFileSync(join(FILES, rel.replace(/^\//, '')))), rel);
  }
});

serial('folders answer with their listing; a missing path with the error; nothing above the share', async (t) => {
  const port = await start();
  t.is((await ask(port, '/')).toString(), 'hello.txt\nnotes/\n');
  t.is((await ask(port, 'notes')).toString(), 'data.json\nreadme.md\n');
  t.regex((await ask(port, 'nope.txt')).toString(), /^error: ENOENT: no such file or directory, stat 'nope\.txt'\n$/);
  // `..` never climbs above the share's root: this is /etc/passwd inside the share, which does not exist.
  t.regex((await ask(port, '../../../../etc/passwd')).toString(), /^error: ENOENT/);
});

serial('SIGINT to the process group (Ctrl-C): one clean stop, status 130, no QEMU errors, QEMU and virtiofsd gone, sockets removed', async (t) => {
  await start();
  const c = cmd!;
  const parts = c.parts()!;
  t.is(parts.virtiofsd.length, 1);
  process.kill(-c.child.pid!, 'SIGINT');
  const exit = await c.exit;
  t.deepEqual(exit, { code: 130, signal: null }, c.stderr());
  t.regex(c.stderr(), /tsvirtio: SIGINT: stopping…\n(?:\[daemon\] .*\n)*tsvirtio: stopped\n$/);
  t.notRegex(c.stderr(), /qemu-system|Failed to write msg|ring restore failed/);
  for (const pid of [parts.qemu, ...parts.virtiofsd]) t.false(alive(pid), `pid ${pid} still running`);
  t.false(existsSync(parts.socketDir), 'socket folder left');
});
