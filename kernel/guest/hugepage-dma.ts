// DMA memory in the guest: 2 MiB pages from hugetlbfs, locked, with their physical
// addresses from /proc/self/pagemap. Without an IOMMU (uio_pci_generic, no VFIO) the
// address a device uses (IOVA) is the physical address. A hugepage is physically
// contiguous and never moves or swaps, so one look-up per page at startup is enough and
// every later translation is arithmetic (DmaArena: page base + offset).
import { closeSync, ftruncateSync, openSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { DmaArena } from '../memory/dma.js';
import { GuestMemory, makeRegion } from '../memory/guest-memory.js';
import { addressOf, mlock, mmap, munmap } from '../native/index.js';
import { SMALL_PAGE_SIZE, readSomePageFrames } from './pagemap.js';

export const HUGEPAGE_SIZE = 2 * 1024 * 1024;
export const HUGETLBFS_MOUNT = '/dev/hugepages';

export class HugepageDmaError extends Error {
  constructor(
    readonly code: 'ERR_HUGEPAGE_ALLOC' | 'ERR_HUGEPAGE_NOT_CONTIGUOUS' | 'ERR_HUGEPAGE_ALIGNMENT',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HugepageDmaError';
  }
}

export interface HugepageDmaOptions {
  /** Number of 2 MiB pages (the kernel must have them reserved: hugepages=N). */
  pages: number;
  /** hugetlbfs mount point (default /dev/hugepages, pagesize=2M). */
  mount?: string;
  name?: string;
}

export interface HugepageDma {
  arena: DmaArena;
  /** Physical address of each 2 MiB page. */
  physAddrs: readonly number[];
  /** The same pages as guest memory (physical address -> bytes), one region per page. */
  memory: GuestMemory;
  /** Virtual address of byte 0 (diagnostics). */
  virtAddr: bigint;
  /** Unmaps the pages: every view over them becomes empty. Reset devices first. */
  release(): void;
}

/**
 * Physical address of each 2 MiB page of a mapping at `vaddr`, checking that each page
 * is physically contiguous and 2 MiB aligned. A hugetlbfs page is one compound page, so
 * its first and last 4 KiB frames (512 frames apart) are what the check reads: a mapping
 * that is not made of hugepages fails it. (Decoding all 512 entries of each page cost
 * ~25 ms per page in a cold guest under TCG, where interpreted JavaScript is slow; the
 * entries of all pages come in one read.)
 */
export function hugepagePhysicalAddresses(vaddr: bigint, pages: number, pagemapPath?: string): number[] {
  const perPage = HUGEPAGE_SIZE / SMALL_PAGE_SIZE;
  const wanted: number[] = [];
  for (let p = 0; p < pages; p++) wanted.push(p * perPage, p * perPage + perPage - 1);
  const frames = readSomePageFrames(vaddr, pages * perPage, wanted, pagemapPath);
  const out: number[] = [];
  for (let p = 0; p < pages; p++) {
    const va = vaddr + BigInt(p * HUGEPAGE_SIZE);
    const first = frames[2 * p]!;
    const last = frames[2 * p + 1]!;
    if (last !== first + perPage - 1) {
      throw new HugepageDmaError(
        'ERR_HUGEPAGE_NOT_CONTIGUOUS',
        `hugepage ${p} (virtual 0x${va.toString(16)}) is not physically contiguous: its last 4 KiB frame is 0x${last.toString(16)}, expected 0x${(first + perPage - 1).toString(16)}`,
      );
    }
    const phys = first * SMALL_PAGE_SIZE;
    if (phys % HUGEPAGE_SIZE !== 0) {
      throw new HugepageDmaError('ERR_HUGEPAGE_ALIGNMENT', `hugepage ${p} starts at physical 0x${phys.toString(16)}, not 2 MiB aligned`);
    }
    out.push(phys);
  }
  return out;
}

/** Allocates `pages` 2 MiB hugepages and wraps them in a DmaArena with physical addresses. */
export function allocateHugepageDma(opts: HugepageDmaOptions): HugepageDma {
  const { pages } = opts;
  if (!Number.isInteger(pages) || pages < 1 || pages > 2047) throw new RangeError(`hugepage dma: page count ${pages} is not 1..2047`);
  const size = pages * HUGEPAGE_SIZE;
  const file = join(opts.mount ?? HUGETLBFS_MOUNT, `tsvirtio-dma-${process.pid}-${Date.now()}`);
  let buffer: ArrayBuffer;
  let fd: number;
  try {
    fd = openSync(file, 'w+', 0o600);
  } catch (e) {
    throw new HugepageDmaError('ERR_HUGEPAGE_ALLOC', `cannot create ${file} (is hugetlbfs mounted there?): ${(e as Error).message}`, { cause: e });
  }
  try {
    ftruncateSync(fd, size);
    // MAP_SHARED | MAP_POPULATE: the pages are taken from the reserved pool now, so a
    // shortage fails here (ENOMEM / SIGBUS later otherwise).
    buffer = mmap(fd, size, 0, true, true, true);
  } catch (e) {
    throw new HugepageDmaError('ERR_HUGEPAGE_ALLOC', `cannot map ${pages} hugepages of 2 MiB from ${file} (reserve them with hugepages=N on the kernel command line): ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
    unlinkSync(file); // the mapping keeps the pages; nothing is left behind in hugetlbfs
  }
  try {
    // MAP_POPULATE faulted every hugepage in (a hugepage is one unit: one write each
    // would do the same); lock (hugepages do not swap, but the lock documents and
    // guarantees that).
    const u8 = new Uint8Array(buffer);
    for (let i = 0; i < size; i += HUGEPAGE_SIZE) u8[i] = 0;
    mlock(buffer);
    const virtAddr = addressOf(buffer);
    const physAddrs = hugepagePhysicalAddresses(virtAddr, pages);
    const arena = new DmaArena(buffer, { pageSize: HUGEPAGE_SIZE, pageAddrs: physAddrs, name: opts.name ?? 'hugepage dma' });
    const memory = new GuestMemory(physAddrs.map((phys, i) => makeRegion(`hugepage ${i}`, phys, buffer, i * HUGEPAGE_SIZE, HUGEPAGE_SIZE)));
    return { arena, physAddrs, memory, virtAddr, release: () => void munmap(buffer) };
  } catch (e) {
    munmap(buffer);
    throw e;
  }
}
