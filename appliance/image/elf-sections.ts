// Sections of a little-endian ELF64 file by name, and zeroing some of them in place (the
// file keeps its size and layout; zeroed pages compress to nothing in the squashfs).
//
// Used for the image's node (icu-data.ts): its unwind tables, .eh_frame and
// .eh_frame_hdr (3.4 MB, 1.7 MB of the compressed image). node and V8 are built with
// -fno-exceptions and catch no C++ exception in their own frames (node's few landing
// pads are clean-ups in libstdc++ stream constructors), so a throw through node's frames
// ends in std::terminate either way; libgcc's unwinder finds version 0 in the zeroed
// header and reports no frame information, so what is lost is the native stack trace
// that node prints on a fatal error (it stops at the first frame in node).

import { ImageBuildError } from './debian.js';

export interface ElfSection {
  name: string;
  type: number;
  offset: number;
  size: number;
}

const SHT_NOBITS = 8;

/** The sections of an ELF64 little-endian file (ERR_ELF_FORMAT naming `what` when it is not one). */
export function elfSections(elf: Buffer, what: string): ElfSection[] {
  if (elf.length < 64 || elf.readUInt32LE(0) !== 0x464c457f || elf[4] !== 2 || elf[5] !== 1) throw new ImageBuildError('ERR_ELF_FORMAT', `${what}: not a little-endian 64-bit ELF file`);
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shnum === 0) return [];
  if (shentsize < 64 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) throw new ImageBuildError('ERR_ELF_FORMAT', `${what}: its section header table lies outside the file`);
  const raw = (i: number): { nameOff: number; type: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return { nameOff: elf.readUInt32LE(at), type: elf.readUInt32LE(at + 4), offset: Number(elf.readBigUInt64LE(at + 0x18)), size: Number(elf.readBigUInt64LE(at + 0x20)) };
  };
  const strtab = raw(shstrndx);
  if (strtab.offset + strtab.size > elf.length) throw new ImageBuildError('ERR_ELF_FORMAT', `${what}: its section name table lies outside the file`);
  const out: ElfSection[] = [];
  for (let i = 0; i < shnum; i++) {
    const s = raw(i);
    const start = strtab.offset + s.nameOff;
    const end = s.nameOff < strtab.size ? elf.indexOf(0, start) : -1;
    const name = end < 0 ? '' : elf.toString('latin1', start, end);
    if (s.type !== SHT_NOBITS && s.size > 0 && s.offset + s.size > elf.length) throw new ImageBuildError('ERR_ELF_FORMAT', `${what}: section ${name || i} lies outside the file`);
    out.push({ name, type: s.type, offset: s.offset, size: s.type === SHT_NOBITS ? 0 : s.size });
  }
  return out;
}

/** Zeroes the named sections in place; returns those found (a missing one is skipped). */
export function zeroSections(elf: Buffer, names: readonly string[], what: string): ElfSection[] {
  const found = elfSections(elf, what).filter((s) => names.includes(s.name) && s.size > 0);
  for (const s of found) elf.fill(0, s.offset, s.offset + s.size);
  return found;
}

/** node's unwind tables (see above). */
export const UNWIND_SECTIONS: readonly string[] = ['.eh_frame_hdr', '.eh_frame'];
