// Keeps the program's code in RAM once it has run: every read-only file mapping of the
// process (the node binary's text and read-only data, the shared libraries, the addon)
// is locked with mlock2(MLOCK_ONFAULT), so each page stays once touched and nothing is
// read in ahead of need.
//
// Why: the guest has no swap and node's binary is read from a disk (microvm: a squashfs
// root). When the program takes all the memory, the kernel evicts node's own code, reads
// it back at the next instruction, and goes on like that: a guest seen stuck for minutes
// in reclaim instead of reaching the OOM killer. With the code locked only anonymous
// memory can run out, and the OOM killer ends the program at once.
//
// Not mlockall(): V8 discards pages of its heap and code space with madvise(), which the
// kernel refuses on locked memory; V8 then dies of "out of memory" (seen: a fatal error in
// AllocateInstructionStream a few seconds after boot).
import { readFileSync } from 'node:fs';
import { mlockOnFault } from '../native/index.js';

export interface FileMapping {
  start: bigint;
  end: bigint;
  /** e.g. "r-xp" */
  perms: string;
  path: string;
}

/**
 * The read-only, private file mappings listed in /proc/self/maps text ("start-end perms
 * offset dev inode path"): what is code or constant data of a file. Lines that do not
 * have that shape are skipped.
 */
export function readOnlyFileMappings(maps: string): FileMapping[] {
  const out: FileMapping[] = [];
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][ps]) [0-9a-f]+ [0-9a-f]+:[0-9a-f]+ (\d+)\s+(\/\S.*)$/.exec(line);
    if (!m || m[4] === '0') continue; // anonymous or special
    const perms = m[3]!;
    if (perms[0] !== 'r' || perms[1] === 'w' || perms[3] !== 'p') continue;
    const path = m[5]!;
    if (path.endsWith(' (deleted)') || path.startsWith('/dev/')) continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms, path });
  }
  return out;
}

/** Locks every read-only file mapping of this process (see above); returns how many and the bytes they span. */
export function lockCodeInMemory(mapsPath = '/proc/self/maps'): { mappings: number; bytes: number } {
  const maps = readOnlyFileMappings(readFileSync(mapsPath, 'latin1'));
  let bytes = 0;
  for (const m of maps) {
    const len = Number(m.end - m.start);
    mlockOnFault(m.start, len);
    bytes += len;
  }
  return { mappings: maps.length, bytes };
}
