// Virtual -> physical translation through /proc/self/pagemap
// (Documentation/admin-guide/mm/pagemap.rst): one little-endian u64 per 4 KiB virtual
// page, at file offset (vaddr / 4096) * 8:
//   bits 0-54  page frame number (PFN), when present; 0 without CAP_SYS_ADMIN
//   bit  62    swapped
//   bit  63    present
// DPDK (rte_mem_virt2phy) and SPDK do the same once per hugepage.
import { closeSync, openSync, readSync } from 'node:fs';

export const PAGEMAP_PATH = '/proc/self/pagemap';
export const SMALL_PAGE_SIZE = 4096;

export class PagemapError extends Error {
  constructor(
    readonly code: 'ERR_PAGEMAP_NOT_PRESENT' | 'ERR_PAGEMAP_NO_PERMISSION' | 'ERR_PAGEMAP_READ',
    message: string,
  ) {
    super(message);
    this.name = 'PagemapError';
  }
}

/**
 * Decodes one pagemap entry into a physical frame number. Throws when the page is not
 * present (not touched, or swapped) or when the PFN reads 0 (no CAP_SYS_ADMIN: the
 * kernel hides frame numbers from unprivileged readers since Linux 4.2).
 */
export function decodePagemapEntry(entry: bigint, vaddr: bigint): number {
  return decodeEntryHalves(Number(entry & 0xffffffffn), Number(entry >> 32n), vaddr, 0);
}

/**
 * The same from the entry's two 32-bit halves, without BigInt arithmetic: a boot reads
 * 512 entries per hugepage, and under TCG, before the JIT has warmed up, BigInt work
 * per entry (and a message string built for each) took 27 ms per hugepage.
 */
/** The virtual address of the `index`th 4 KiB page from `base`, in hex (for messages only). */
function pageAddress(base: bigint, index: number): string {
  return (base + BigInt(index * SMALL_PAGE_SIZE)).toString(16);
}

function decodeEntryHalves(lo: number, hi: number, base: bigint, index: number): number {
  if ((hi & 0x80000000) === 0) {
    throw new PagemapError('ERR_PAGEMAP_NOT_PRESENT', `virtual page 0x${pageAddress(base, index)} is not present in RAM${hi & 0x40000000 ? ' (swapped out)' : ''}: touch and lock it first`);
  }
  // PFN: bits 0-54 = lo + (hi bits 0-22) * 2^32.
  const pfn = (hi & 0x7fffff) * 0x100000000 + (lo >>> 0);
  if (pfn === 0) {
    throw new PagemapError('ERR_PAGEMAP_NO_PERMISSION', `virtual page 0x${pageAddress(base, index)}: /proc/self/pagemap shows PFN 0: reading physical addresses needs CAP_SYS_ADMIN (run as root)`);
  }
  return pfn;
}

/**
 * Physical frame numbers of `count` consecutive 4 KiB pages starting at virtual address
 * `vaddr` (4 KiB aligned), with one read.
 */
export function readPageFrames(vaddr: bigint, count: number, path = PAGEMAP_PATH): number[] {
  return readSomePageFrames(vaddr, count, Array.from({ length: count }, (_, i) => i), path);
}

/**
 * Physical frame numbers of the pages at `indexes` (each below `span`) among the `span`
 * consecutive 4 KiB pages from `vaddr` (4 KiB aligned): one open and one read of the
 * span's entries, and only the wanted entries decoded (a boot checks 2 of every 512).
 */
export function readSomePageFrames(vaddr: bigint, span: number, indexes: readonly number[], path = PAGEMAP_PATH): number[] {
  if (vaddr % BigInt(SMALL_PAGE_SIZE) !== 0n) throw new RangeError(`pagemap: address 0x${vaddr.toString(16)} is not 4 KiB aligned`);
  for (const i of indexes) if (!Number.isInteger(i) || i < 0 || i >= span) throw new RangeError(`pagemap: page index ${i} is outside the span of ${span} pages`);
  const buf = Buffer.alloc(span * 8);
  const fd = openSync(path, 'r');
  try {
    const position = Number((vaddr / BigInt(SMALL_PAGE_SIZE)) * 8n);
    const n = readSync(fd, buf, 0, buf.length, position);
    if (n !== buf.length) throw new PagemapError('ERR_PAGEMAP_READ', `${path}: read ${n} of ${buf.length} bytes at 0x${position.toString(16)}`);
  } finally {
    closeSync(fd);
  }
  return indexes.map((i) => decodeEntryHalves(buf.readUInt32LE(i * 8), buf.readUInt32LE(i * 8 + 4), vaddr, i));
}
