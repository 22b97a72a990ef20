// The guest kernel's ELF file without its padding. Our vmlinux (kernel-build.ts) is
// 11.8 MB on disk but holds about 2.5 MB that is neither zero nor alignment fill: the
// linker places each segment at a 2 MiB file offset, rodata starts at the next 2 MiB
// boundary after the text (a 2 MB zero gap the kernel frees at boot), and the entry text
// sits in its own 2 MiB page (2.6 MB of int3 fill, 0xcc, around it).
//
// repackKernelElf writes the same memory image with less file: every PT_LOAD segment is
// cut where it has a long run of zero bytes (>= 4 KiB) or of 0xcc fill (>= 64 KiB:
// only the linker's alignment padding is that long), the pieces packed one after another
// in the file, each piece's memory size reaching to the next piece, so QEMU's ELF loader
// (which reads p_filesz bytes at p_offset and zero-fills up to p_memsz) fills the cut
// runs with zeros. The 0xcc fill thus becomes zeros: it is never executed (it pads to the
// 2 MiB boundaries of the text mapping). PT_NOTE (the PVH entry QEMU boots from) is moved
// with the bytes it lies in; the section headers are dropped (QEMU reads none; the
// cache keeps the full vmlinux beside it).

import { ImageBuildError } from './debian.js';

const PT_LOAD = 1;
const PHDR_SIZE = 56;
const EHDR_SIZE = 64;
/** Runs of zero bytes at least this long are cut out. */
export const MIN_ZERO_RUN = 4096;
/** Runs of 0xcc (int3) fill at least this long are cut out. */
export const MIN_FILL_RUN = 64 * 1024;
/** File offsets of the pieces: congruent to their addresses modulo this (p_align). */
const PIECE_ALIGN = 16;

export interface ProgramHeader {
  type: number;
  flags: number;
  offset: number;
  /** Kernel addresses exceed 2^53: bigint. */
  vaddr: bigint;
  paddr: bigint;
  filesz: number;
  memsz: number;
  align: number;
}

function kernelError(what: string, message: string): ImageBuildError {
  return new ImageBuildError('ERR_KERNEL_ELF', `${what}: ${message}`);
}

/** The program headers of a little-endian ELF64 file (ERR_KERNEL_ELF naming `what`). */
export function programHeaders(elf: Buffer, what: string): ProgramHeader[] {
  if (elf.length < EHDR_SIZE || elf.readUInt32LE(0) !== 0x464c457f || elf[4] !== 2 || elf[5] !== 1) throw kernelError(what, 'not a little-endian 64-bit ELF file');
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  if (phnum === 0 || phentsize !== PHDR_SIZE || phoff + phnum * PHDR_SIZE > elf.length) throw kernelError(what, `program header table (${phnum} entries of ${phentsize} bytes at ${phoff}) is missing or outside the file`);
  const out: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * PHDR_SIZE;
    const h: ProgramHeader = {
      type: elf.readUInt32LE(at),
      flags: elf.readUInt32LE(at + 4),
      offset: Number(elf.readBigUInt64LE(at + 8)),
      vaddr: elf.readBigUInt64LE(at + 16),
      paddr: elf.readBigUInt64LE(at + 24),
      filesz: Number(elf.readBigUInt64LE(at + 32)),
      memsz: Number(elf.readBigUInt64LE(at + 40)),
      align: Number(elf.readBigUInt64LE(at + 48)),
    };
    if (h.filesz > 0 && h.offset + h.filesz > elf.length) throw kernelError(what, `segment ${i} (offset ${h.offset}, ${h.filesz} bytes) lies outside the file`);
    if (h.type === PT_LOAD && h.memsz < h.filesz) throw kernelError(what, `segment ${i}: memory size ${h.memsz} below its file size ${h.filesz}`);
    out.push(h);
  }
  return out;
}

/** [start, end) ranges of `buf` to keep: everything but the long runs of zeros and of 0xcc. */
export function keptRanges(buf: Buffer): Array<[number, number]> {
  const cut: Array<[number, number]> = [];
  for (let i = 0; i < buf.length; ) {
    const b = buf[i]!;
    if (b !== 0 && b !== 0xcc) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < buf.length && buf[j] === b) j++;
    if (j - i >= (b === 0 ? MIN_ZERO_RUN : MIN_FILL_RUN)) cut.push([i, j]);
    i = j;
  }
  const kept: Array<[number, number]> = [];
  let at = 0;
  for (const [s, e] of cut) {
    if (s > at) kept.push([at, s]);
    at = e;
  }
  if (at < buf.length) kept.push([at, buf.length]);
  return kept;
}

/** The repacked file (see above); `what` names the input in errors. */
export function repackKernelElf(elf: Buffer, what: string): Buffer {
  const headers = programHeaders(elf, what);
  interface Piece {
    h: ProgramHeader;
    /** Old file offset of the piece. */
    from: number;
    bytes: Buffer;
    newOffset: number;
  }
  const loads: ProgramHeader[] = [];
  const pieces: Piece[] = [];
  // Each load segment becomes one or more: pieces with a memory size reaching the next piece.
  for (const h of headers) {
    if (h.type !== PT_LOAD) continue;
    const data = elf.subarray(h.offset, h.offset + h.filesz);
    const ranges = keptRanges(data);
    if (ranges.length === 0) ranges.push([0, 0]);
    ranges.forEach(([s, e], i) => {
      const memEnd = i + 1 < ranges.length ? ranges[i + 1]![0] : h.memsz;
      const start = i === 0 ? 0 : s;
      const seg: ProgramHeader = { ...h, offset: 0, vaddr: h.vaddr + BigInt(start), paddr: h.paddr + BigInt(start), filesz: e - start, memsz: memEnd - start, align: PIECE_ALIGN };
      loads.push(seg);
      pieces.push({ h: seg, from: h.offset + start, bytes: data.subarray(start, e), newOffset: 0 });
    });
  }
  if (loads.length === 0) throw kernelError(what, 'has no PT_LOAD segment');
  const others = headers.filter((h) => h.type !== PT_LOAD);
  const phnum = loads.length + others.length;
  if (phnum > 0xffff) throw kernelError(what, `${phnum} program headers after repacking: too many`);
  let at = EHDR_SIZE + phnum * PHDR_SIZE;
  for (const p of pieces) {
    at += (Number(p.h.vaddr % BigInt(PIECE_ALIGN)) - (at % PIECE_ALIGN) + PIECE_ALIGN) % PIECE_ALIGN;
    p.newOffset = at;
    p.h.offset = at;
    at += p.bytes.length;
  }
  // Other headers (PT_NOTE, PT_GNU_STACK): moved with the bytes they lie in.
  const moved = others.map((h) => {
    if (h.filesz === 0) return { ...h, offset: 0 };
    const p = pieces.find((q) => h.offset >= q.from && h.offset + h.filesz <= q.from + q.bytes.length);
    if (!p) throw kernelError(what, `segment of type ${h.type} at file offset ${h.offset} does not lie in one kept piece of a PT_LOAD segment`);
    return { ...h, offset: p.newOffset + (h.offset - p.from) };
  });

  const out = Buffer.alloc(at);
  elf.copy(out, 0, 0, EHDR_SIZE);
  out.writeBigUInt64LE(BigInt(EHDR_SIZE), 0x20); // e_phoff
  out.writeBigUInt64LE(0n, 0x28); // e_shoff: no section headers
  out.writeUInt16LE(PHDR_SIZE, 0x36);
  out.writeUInt16LE(phnum, 0x38);
  out.writeUInt16LE(0, 0x3a); // e_shentsize
  out.writeUInt16LE(0, 0x3c); // e_shnum
  out.writeUInt16LE(0, 0x3e); // e_shstrndx
  [...loads, ...moved].forEach((h, i) => {
    const o = EHDR_SIZE + i * PHDR_SIZE;
    out.writeUInt32LE(h.type, o);
    out.writeUInt32LE(h.flags, o + 4);
    out.writeBigUInt64LE(BigInt(h.offset), o + 8);
    out.writeBigUInt64LE(h.vaddr, o + 16);
    out.writeBigUInt64LE(h.paddr, o + 24);
    out.writeBigUInt64LE(BigInt(h.filesz), o + 32);
    out.writeBigUInt64LE(BigInt(h.memsz), o + 40);
    out.writeBigUInt64LE(BigInt(h.align), o + 48);
  });
  for (const p of pieces) p.bytes.copy(out, p.newOffset);
  return out;
}

/**
 * The memory image an ELF loader makes of the file's PT_LOAD segments, by physical
 * address: bytes from the file, zeros up to memsz. For tests: a repacked file must give
 * the original's image, except 0xcc fill turned to zeros.
 */
export function loadedImage(elf: Buffer, what: string): { base: bigint; bytes: Buffer } {
  const loads = programHeaders(elf, what).filter((h) => h.type === PT_LOAD);
  const base = loads.reduce((m, h) => (h.paddr < m ? h.paddr : m), loads[0]!.paddr);
  const end = loads.reduce((m, h) => (h.paddr + BigInt(h.memsz) > m ? h.paddr + BigInt(h.memsz) : m), 0n);
  const bytes = Buffer.alloc(Number(end - base));
  for (const h of loads) elf.copy(bytes, Number(h.paddr - base), h.offset, h.offset + h.filesz);
  return { base, bytes };
}
