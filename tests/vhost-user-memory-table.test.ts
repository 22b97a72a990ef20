// The mapped memory table: guest-physical regions with holes, user-address translation
// for rings, regions bigger than one ArrayBuffer mapped in chunks, fds closed, unmap.
import test from 'ava';
import { fstatSync, ftruncateSync } from 'node:fs';

import * as n from '../kernel/native/index.js';
import type { VhostUserError } from '../kernel/vhost-user/errors.js';
import { VhostMemoryTable } from '../kernel/vhost-user/memory-table.js';

const GiB = 2 ** 30;

function memfd(size: number): number {
  const fd = n.memfdCreate('table-test');
  ftruncateSync(fd, size);
  return fd;
}

const isClosed = (fd: number): boolean => {
  try {
    fstatSync(fd);
    return false;
  } catch {
    return true;
  }
};

test('two regions around a hole, one at a non-zero mmap offset; fds are closed; unmap detaches', (t) => {
  const fd = memfd(0x400000);
  const guest = new Uint8Array(n.mmap(fd, 0x400000, 0));
  try {
    const fdA = memfdDup(fd);
    const fdB = memfdDup(fd);
    const table = VhostMemoryTable.map(
      [
        { guestPhysAddr: 0, memorySize: 0xa0000, userspaceAddr: 0x7f0000000000, mmapOffset: 0 },
        { guestPhysAddr: 0xc0000, memorySize: 0x340000, userspaceAddr: 0x7f00000c0000, mmapOffset: 0xc0000 },
      ],
      [fdA, fdB],
    );
    t.true(isClosed(fdA) && isClosed(fdB), 'the table closes the fds it was given');
    t.is(table.memory.regions.length, 2);
    guest[0x123456] = 0x77;
    t.is(table.memory.view(0x123456, 1)[0], 0x77, 'same bytes as the guest sees');
    t.false(table.memory.contains(0xa0000, 1), 'the hole is not memory');
    t.is(table.userToGuest(0x7f00000c1000, 0x100), 0xc1000);
    t.is(table.userToGuest(0x7f0000001000, 16), 0x1000);
    t.is(table.userToGuest(0x7f000009fff0, 0x20), null, 'a range running into the hole');
    const v = table.memory.view(0x1000, 16);
    table.unmap();
    t.is(v.length, 0, 'views over unmapped memory are empty');
    table.unmap(); // idempotent
  } finally {
    n.munmap(guest.buffer as ArrayBuffer);
    n.close(fd);
  }
});

/** A second fd for the same memfd (as SCM_RIGHTS would give the receiver). */
function memfdDup(fd: number): number {
  const [a, b] = n.unixSocketPair();
  try {
    n.sendMsg(a, Buffer.from('x'), [fd]);
    const r = n.recvMsg(b, new Uint8Array(1), 1);
    return r.fds[0]!;
  } finally {
    n.close(a);
    n.close(b);
  }
}

test('a region larger than 4 GiB is mapped in chunks cut at 2 GiB guest boundaries', (t) => {
  const fd = memfd(6 * GiB); // sparse
  try {
    const table = VhostMemoryTable.map([{ guestPhysAddr: 4 * GiB + 0x1000, memorySize: 5 * GiB, userspaceAddr: 0x7f0000000000, mmapOffset: 0x1000 }], [memfdDup(fd)]);
    try {
      t.deepEqual(
        table.memory.regions.map((r) => [r.name, r.guestAddr, r.size]),
        [
          ['qemu region 0 part 0', 4 * GiB + 0x1000, 2 * GiB - 0x1000],
          ['qemu region 0 part 1', 6 * GiB, 2 * GiB],
          ['qemu region 0 part 2', 8 * GiB, GiB + 0x1000],
        ],
      );
      const probe = new Uint8Array(n.mmap(fd, 4096, 5 * GiB)); // file offset 5 GiB = guest 9 GiB
      probe[8] = 0x42;
      t.is(table.memory.view(9 * GiB + 8, 1)[0], 0x42);
      n.munmap(probe.buffer as ArrayBuffer);
      t.false(table.memory.contains(6 * GiB - 8, 16), 'a range across a chunk boundary is refused');
    } finally {
      table.unmap();
    }
  } finally {
    n.close(fd);
  }
});

test('refusals name the region and close every fd', (t) => {
  const fd = memfd(0x100000);
  try {
    const cases: [string, Parameters<typeof VhostMemoryTable.map>[0], RegExp][] = [
      ['too big', [{ guestPhysAddr: 0, memorySize: 0x200000, userspaceAddr: 0x1000, mmapOffset: 0 }], /region 0 .* does not fit its fd/],
      ['offset past the end', [{ guestPhysAddr: 0, memorySize: 0x1000, userspaceAddr: 0x1000, mmapOffset: 0x100000 }], /does not fit its fd/],
      ['empty', [{ guestPhysAddr: 0, memorySize: 0, userspaceAddr: 0x1000, mmapOffset: 0 }], /has size 0/],
      [
        'guest overlap',
        [
          { guestPhysAddr: 0, memorySize: 0x2000, userspaceAddr: 0x10000, mmapOffset: 0 },
          { guestPhysAddr: 0x1000, memorySize: 0x1000, userspaceAddr: 0x20000, mmapOffset: 0 },
        ],
        /overlap/,
      ],
      [
        'user overlap',
        [
          { guestPhysAddr: 0, memorySize: 0x2000, userspaceAddr: 0x10000, mmapOffset: 0 },
          { guestPhysAddr: 0x10000, memorySize: 0x1000, userspaceAddr: 0x11000, mmapOffset: 0 },
        ],
        /user ranges of two regions overlap/,
      ],
    ];
    for (const [what, regions, message] of cases) {
      const fds = regions.map(() => memfdDup(fd));
      const err = t.throws(() => VhostMemoryTable.map(regions, fds), undefined, what) as VhostUserError;
      t.is(err.code, 'ERR_VHOST_USER_MEMORY', what);
      t.regex(err.message, message, what);
      t.true(fds.every(isClosed), `${what}: fds closed`);
    }
  } finally {
    n.close(fd);
  }
});
