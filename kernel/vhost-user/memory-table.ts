// The front-end's memory table (SET_MEM_TABLE), mapped: one GuestMemory over
// guest-physical addresses (descriptors carry these) plus the translation from the
// front-end's own virtual addresses (ring addresses arrive as these: vhost-user.rst
// "Memory access": "User addresses map to the vhost memory region containing that
// user address"; SET_VRING_ADDR: "Otherwise it is a user address").
//
// Each region is mapped MAP_SHARED from its fd at its mmap_offset. The fds are closed
// right after mapping (a mapping outlives its fd). unmap() detaches every ArrayBuffer,
// so a view kept by mistake reads as empty instead of touching unmapped memory.
import { fstatSync } from 'node:fs';
import { GuestMemory, makeRegion, type MemoryRegion } from '../memory/guest-memory.js';
import { mmap, munmap, pageSize } from '../native/index.js';
import type { MemoryRegionDescription } from './codec.js';
import { VhostUserError } from './errors.js';
import { closeFds } from './framing.js';
import { Request } from './protocol.js';

const hex = (n: number): string => '0x' + n.toString(16);
const MAX = Number.MAX_SAFE_INTEGER;

/**
 * Node's largest ArrayBuffer is 4 GiB: a bigger region is mapped as several chunks cut at
 * 2 GiB guest-physical boundaries (each its own MemoryRegion). Guest buffers are
 * naturally aligned page blocks, so none crosses such a boundary in practice; one that
 * does is refused by GuestMemory like any range crossing regions.
 */
const MAX_MAPPING = 2 ** 32;
const CHUNK = 2 ** 31;

interface Chunk {
  readonly mapping: ArrayBuffer;
  readonly region: MemoryRegion;
}

interface MappedRegion {
  readonly desc: MemoryRegionDescription;
  readonly chunks: Chunk[];
}

/** Guest ranges to map separately for one region: [guest address, size] pairs. */
function chunkRanges(d: MemoryRegionDescription): [number, number][] {
  if (d.memorySize <= MAX_MAPPING - 0x10000) return [[d.guestPhysAddr, d.memorySize]];
  const out: [number, number][] = [];
  const end = d.guestPhysAddr + d.memorySize;
  for (let g = d.guestPhysAddr; g < end; ) {
    const next = Math.min(end, (Math.floor(g / CHUNK) + 1) * CHUNK);
    out.push([g, next - g]);
    g = next;
  }
  return out;
}

const memErr = (msg: string): VhostUserError => new VhostUserError('ERR_VHOST_USER_MEMORY', `SET_MEM_TABLE: ${msg}`, Request.SET_MEM_TABLE);

function describeRegion(i: number, d: MemoryRegionDescription): string {
  return `region ${i} (guest ${hex(d.guestPhysAddr)}..${hex(d.guestPhysAddr + d.memorySize)}, user ${hex(d.userspaceAddr)}, mmap_offset ${hex(d.mmapOffset)})`;
}

export class VhostMemoryTable {
  readonly memory: GuestMemory;
  readonly #mapped: MappedRegion[];
  /** Regions sorted by user address, for translating ring addresses. */
  readonly #byUser: MappedRegion[];
  #unmapped = false;

  private constructor(mapped: MappedRegion[]) {
    this.#mapped = mapped;
    this.memory = new GuestMemory(mapped.flatMap((m) => m.chunks.map((c) => c.region)));
    this.#byUser = [...mapped].sort((a, b) => a.desc.userspaceAddr - b.desc.userspaceAddr);
  }

  /**
   * Validates and maps every region. Takes ownership of `fds` (one per region, in order)
   * and closes them all, on success and on failure. Throws ERR_VHOST_USER_MEMORY naming
   * the region and what is wrong with it.
   */
  static map(regions: readonly MemoryRegionDescription[], fds: readonly number[]): VhostMemoryTable {
    const mapped: MappedRegion[] = [];
    try {
      if (regions.length !== fds.length) throw memErr(`${regions.length} regions but ${fds.length} fds`);
      const ps = pageSize();
      regions.forEach((d, i) => {
        const what = describeRegion(i, d);
        if (d.memorySize === 0) throw memErr(`${what} has size 0`);
        if (d.guestPhysAddr + d.memorySize > MAX) throw memErr(`${what}: guest range overflows 2^53`);
        if (d.userspaceAddr + d.memorySize > MAX) throw memErr(`${what}: user range overflows 2^53`);
        if (d.mmapOffset + d.memorySize > MAX) throw memErr(`${what}: mmap_offset + size overflows 2^53`);
        let fdSize: number;
        try {
          fdSize = fstatSync(fds[i]!).size;
        } catch (err) {
          throw memErr(`${what}: fstat of its fd failed: ${(err as Error).message}`);
        }
        if (d.mmapOffset + d.memorySize > fdSize) {
          throw memErr(`${what} does not fit its fd: it needs bytes up to ${hex(d.mmapOffset + d.memorySize)}, the fd has ${hex(fdSize)}`);
        }
        const m: MappedRegion = { desc: d, chunks: [] };
        mapped.push(m);
        const ranges = chunkRanges(d);
        for (const [gpa, size] of ranges) {
          // mmap needs a page-aligned file offset: map from the page holding the start.
          const fileOffset = d.mmapOffset + (gpa - d.guestPhysAddr);
          const mapOffset = Math.floor(fileOffset / ps) * ps;
          const delta = fileOffset - mapOffset;
          let mapping: ArrayBuffer;
          try {
            mapping = mmap(fds[i]!, delta + size, mapOffset, true, true);
          } catch (err) {
            throw memErr(`${what}: mmap of ${hex(delta + size)} bytes at file offset ${hex(mapOffset)} failed: ${(err as Error).message}`);
          }
          const name = ranges.length === 1 ? `qemu region ${i}` : `qemu region ${i} part ${m.chunks.length}`;
          try {
            m.chunks.push({ mapping, region: makeRegion(name, gpa, mapping, delta, size) });
          } catch (err) {
            munmap(mapping);
            throw memErr(`${what}: ${(err as Error).message}`);
          }
        }
      });
      const byUser = [...mapped].sort((a, b) => a.desc.userspaceAddr - b.desc.userspaceAddr);
      for (let i = 1; i < byUser.length; i++) {
        const p = byUser[i - 1]!.desc;
        const c = byUser[i]!.desc;
        if (p.userspaceAddr + p.memorySize > c.userspaceAddr) throw memErr(`user ranges of two regions overlap at ${hex(c.userspaceAddr)}`);
      }
      try {
        return new VhostMemoryTable(mapped);
      } catch (err) {
        throw memErr((err as Error).message); // guest ranges overlap
      }
    } catch (err) {
      for (const m of mapped) for (const c of m.chunks) munmap(c.mapping);
      throw err;
    } finally {
      closeFds(fds);
    }
  }

  get regionCount(): number {
    return this.#mapped.length;
  }

  /**
   * The guest-physical address of [userAddr, userAddr + length), which must lie inside one
   * region; null if it does not.
   */
  userToGuest(userAddr: number, length: number): number | null {
    for (const m of this.#byUser) {
      const d = m.desc;
      if (userAddr >= d.userspaceAddr && userAddr - d.userspaceAddr + length <= d.memorySize) return d.guestPhysAddr + (userAddr - d.userspaceAddr);
    }
    return null;
  }

  /** "region 0 (guest 0x0..0xa0000, user 0x7f.., mmap_offset 0x0), ..." */
  describe(): string {
    return this.#mapped.map((m, i) => describeRegion(i, m.desc)).join(', ');
  }

  /** Unmaps every region (idempotent). Views over the old memory become empty. */
  unmap(): void {
    if (this.#unmapped) return;
    this.#unmapped = true;
    for (const m of this.#mapped) for (const c of m.chunks) munmap(c.mapping);
  }
}
