// Answers with files of a folder the host shares (read through our virtio-fs driver),
// over a plain vsock stream, one request per connection:
//
//   npx tsvirtio run examples/file-server --share examples/file-server/files --forward 7000=7000
//   printf 'hello.txt\n' | nc -q1 localhost 7000     # the file's bytes
//   printf 'notes/\n' | nc -q1 localhost 7000        # a listing: one name a line, / after folders
//
// A request is a path and a newline; a missing path answers "error ENOENT: ..." and a
// folder its listing. Started without --share it says so and exits with status 2.
import type { VsockSocket } from 'tsvirtio/guest';
import { exit, files, listen, shares } from 'tsvirtio/guest';

const PORT = 7000;
const MAX_REQUEST = 4096;

if (shares().length === 0) {
  console.error('file-server: no shared folder: start it with --share DIR');
  exit(2);
}

async function answer(path: string): Promise<Buffer | string> {
  const stat = await files.stat(path);
  if (!stat.isDirectory()) return files.readFile(path);
  const entries = await files.readdir(path, { withFileTypes: true });
  return entries.map((e) => `${e.name}${e.isDirectory() ? '/' : ''}\n`).sort().join('');
}

function serveConnection(socket: VsockSocket): void {
  let request = '';
  socket.setEncoding('utf8');
  socket.on('error', (e) => console.error(`file-server: ${e.message}`));
  socket.on('data', (chunk: string) => {
    request += chunk;
    const nl = request.indexOf('\n');
    if (nl < 0 && request.length < MAX_REQUEST) return;
    socket.removeAllListeners('data');
    const path = (nl < 0 ? request : request.slice(0, nl)).trim() || '/';
    answer(path).then(
      (body) => socket.end(body),
      (e: Error) => socket.end(`error: ${e.message}\n`),
    );
  });
}

listen(PORT, serveConnection).on('listening', () => console.log(`file-server: serving the share "${files.tag}" on vsock port ${PORT}`));
