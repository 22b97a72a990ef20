// kernel/guest/code-lock.ts: which mappings of /proc/self/maps count as code (read-only,
// private, file-backed), and locking them in this very process.
import test from 'ava';
import { readOnlyFileMappings, lockCodeInMemory } from '../kernel/guest/code-lock.js';
import { addonAvailable } from '../kernel/native/index.js';

const MAPS = [
  '00400000-00401000 r--p 00000000 fe:00 1234                               /usr/bin/node',
  '00401000-02a00000 r-xp 00001000 fe:00 1234                               /usr/bin/node',
  '05c00000-05c10000 rw-p 05800000 fe:00 1234                               /usr/bin/node',
  '05c10000-05d00000 rw-p 00000000 00:00 0                                  [heap]',
  '7f0000000000-7f0000200000 rw-s 00000000 00:10 99                         /dev/hugepages/tsvirtio-dma-1 (deleted)',
  '7f0000200000-7f0000220000 r--p 00000000 fe:00 77                         /usr/lib/x86_64-linux-gnu/libc.so.6',
  '7f0000220000-7f0000300000 r-xp 00020000 fe:00 77                         /usr/lib/x86_64-linux-gnu/libc.so.6',
  '7f0000400000-7f0000401000 r--p 00000000 fe:00 88                         /app/old.so (deleted)',
  '7f0000500000-7f0000600000 ---p 00000000 00:00 0 ',
  '7f0000600000-7f0000601000 r--s 00000000 00:05 5                          /dev/uio0',
  '7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]',
  'not a maps line',
  '',
].join('\n');

test('readOnlyFileMappings: read-only private file mappings only, addresses as bigints', (t) => {
  const got = readOnlyFileMappings(MAPS);
  t.deepEqual(
    got.map((m) => [m.start.toString(16), m.end.toString(16), m.perms, m.path]),
    [
      ['400000', '401000', 'r--p', '/usr/bin/node'],
      ['401000', '2a00000', 'r-xp', '/usr/bin/node'],
      ['7f0000200000', '7f0000220000', 'r--p', '/usr/lib/x86_64-linux-gnu/libc.so.6'],
      ['7f0000220000', '7f0000300000', 'r-xp', '/usr/lib/x86_64-linux-gnu/libc.so.6'],
    ],
  );
});

test('lockCodeInMemory locks this process\'s code mappings (as root; the addon is needed)', (t) => {
  if (!addonAvailable() || process.getuid?.() !== 0) return t.pass('needs the addon and root');
  const r = lockCodeInMemory();
  t.true(r.mappings >= 2, JSON.stringify(r));
  t.true(r.bytes > 1 << 20, JSON.stringify(r));
});
