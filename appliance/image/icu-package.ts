// ICU's common data package (the `icudt<NN>l.dat` format, ICU's ucmndata.h) and the
// copy of it that node links into its binary (the dynamic symbol `icudt<NN>_dat`): found,
// parsed, trimmed to a few locales, written again, or emptied in place. Pure functions on
// buffers; icu-data.ts runs them on the node binary and caches the results.
//
// A package: a data header (u16 headerSize, magic 0xda 0x27, UDataInfo with dataFormat
// "CmnD"), then at headerSize the table of contents: u32 count, count pairs of u32
// (name offset, data offset; both from the start of the table), the NUL-terminated item
// names ("icudt78l/coll/root.res"), and the items, each a data file of its own, 16-byte
// aligned. ICU finds items by binary search on the names, so they stay sorted.

import { ImageBuildError } from './debian.js';

/** One item of a package: its name without the package prefix ("coll/root.res") and its bytes. */
export interface IcuItem {
  name: string;
  data: Buffer;
}

export interface IcuPackage {
  /** The data header (headerSize bytes), kept as it was. */
  header: Buffer;
  /** "icudt78l": the prefix of every item name. */
  packageName: string;
  items: IcuItem[];
}

/** Where node's linked ICU data lies in its binary. */
export interface EmbeddedIcu {
  /** `icudt78_dat` */
  symbol: string;
  /** ICU's major version from the symbol's name (78). */
  version: number;
  /** File offset of the package. */
  offset: number;
  /** The symbol's size in bytes. */
  size: number;
}

const ELF_MAGIC = 0x464c457f; // "\x7fELF" read little-endian
const SHT_DYNSYM = 11;
const ALIGN = 16;

function icuError(code: string, what: string, message: string): ImageBuildError {
  return new ImageBuildError(code, `${what}: ${message}`);
}

/**
 * Finds the dynamic symbol `icudt<NN>_dat` in a little-endian ELF64 file and turns its
 * address into a file offset (through the section that holds it). `what` names the file
 * in errors: ERR_ICU_NOT_ELF, ERR_ICU_SYMBOL_MISSING, ERR_ICU_SYMBOL_RANGE.
 */
export function findEmbeddedIcu(elf: Buffer, what: string): EmbeddedIcu {
  if (elf.length < 64 || elf.readUInt32LE(0) !== ELF_MAGIC || elf[4] !== 2 || elf[5] !== 1) {
    throw icuError('ERR_ICU_NOT_ELF', what, 'not a little-endian 64-bit ELF file');
  }
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  if (shoff === 0 || shnum === 0 || shentsize < 64 || shoff + shnum * shentsize > elf.length) {
    throw icuError('ERR_ICU_SYMBOL_MISSING', what, 'has no section headers (cannot look up icudt*_dat)');
  }
  const section = (i: number): { type: number; addr: number; offset: number; size: number; link: number; entsize: number } => {
    const at = shoff + i * shentsize;
    return {
      type: elf.readUInt32LE(at + 4),
      addr: Number(elf.readBigUInt64LE(at + 0x10)),
      offset: Number(elf.readBigUInt64LE(at + 0x18)),
      size: Number(elf.readBigUInt64LE(at + 0x20)),
      link: elf.readUInt32LE(at + 0x28),
      entsize: Number(elf.readBigUInt64LE(at + 0x38)),
    };
  };
  for (let i = 0; i < shnum; i++) {
    const sym = section(i);
    if (sym.type !== SHT_DYNSYM || sym.entsize < 24 || sym.link >= shnum) continue;
    const str = section(sym.link);
    if (sym.offset + sym.size > elf.length || str.offset + str.size > elf.length) throw icuError('ERR_ICU_NOT_ELF', what, 'its dynamic symbol table lies outside the file');
    for (let at = sym.offset; at + 24 <= sym.offset + sym.size; at += sym.entsize) {
      const nameOff = elf.readUInt32LE(at);
      if (nameOff >= str.size) continue;
      const start = str.offset + nameOff;
      const end = elf.indexOf(0, start);
      if (end < 0 || end - start > 32) continue;
      const m = /^icudt(\d+)_dat$/.exec(elf.toString('latin1', start, end));
      if (!m) continue;
      const shndx = elf.readUInt16LE(at + 6);
      const value = Number(elf.readBigUInt64LE(at + 8));
      const size = Number(elf.readBigUInt64LE(at + 16));
      if (shndx === 0 || shndx >= shnum) throw icuError('ERR_ICU_SYMBOL_RANGE', what, `${m[0]} is not defined in a section (index ${shndx})`);
      const holder = section(shndx);
      const offset = value - holder.addr + holder.offset;
      if (value < holder.addr || value + size > holder.addr + holder.size || offset + size > elf.length) {
        throw icuError('ERR_ICU_SYMBOL_RANGE', what, `${m[0]} (0x${value.toString(16)}, ${size} bytes) lies outside its section or the file`);
      }
      return { symbol: m[0], version: Number(m[1]), offset, size };
    }
  }
  throw icuError('ERR_ICU_SYMBOL_MISSING', what, 'has no dynamic symbol icudt<NN>_dat (node built without full ICU data linked in?)');
}

/** Checks the data header of a common data package; returns headerSize. ERR_ICU_BAD_HEADER. */
export function checkPackageHeader(buf: Buffer, what: string): number {
  if (buf.length < 32) throw icuError('ERR_ICU_BAD_HEADER', what, `${buf.length} bytes: too short for an ICU data header`);
  const headerSize = buf.readUInt16LE(0);
  if (buf[2] !== 0xda || buf[3] !== 0x27) throw icuError('ERR_ICU_BAD_HEADER', what, `magic bytes 0x${buf[2]!.toString(16)} 0x${buf[3]!.toString(16)} (expected 0xda 0x27)`);
  if (headerSize < 24 || headerSize % 4 !== 0 || headerSize + 4 > buf.length) throw icuError('ERR_ICU_BAD_HEADER', what, `header size ${headerSize} does not fit a package of ${buf.length} bytes`);
  const info = 4;
  if (buf[info + 4] !== 0) throw icuError('ERR_ICU_BAD_HEADER', what, 'big-endian data (expected little-endian)');
  if (buf[info + 5] !== 0) throw icuError('ERR_ICU_BAD_HEADER', what, `charset family ${buf[info + 5]} (expected ASCII, 0)`);
  const format = buf.toString('latin1', info + 8, info + 12);
  if (format !== 'CmnD') throw icuError('ERR_ICU_BAD_HEADER', what, `data format ${JSON.stringify(format)} (expected a common data package, "CmnD")`);
  if (buf[info + 12] !== 1) throw icuError('ERR_ICU_BAD_HEADER', what, `package format version ${buf[info + 12]} (expected 1)`);
  return headerSize;
}

/** Parses a package; every offset is checked (ERR_ICU_BAD_HEADER, ERR_ICU_BAD_TOC). */
export function parsePackage(buf: Buffer, what: string): IcuPackage {
  const headerSize = checkPackageHeader(buf, what);
  const toc = headerSize;
  const count = buf.readUInt32LE(toc);
  if (toc + 4 + count * 8 > buf.length) throw icuError('ERR_ICU_BAD_TOC', what, `${count} items do not fit a package of ${buf.length} bytes`);
  const names: string[] = [];
  const offsets: number[] = [];
  let packageName = '';
  for (let i = 0; i < count; i++) {
    const nameAt = toc + buf.readUInt32LE(toc + 4 + i * 8);
    const dataAt = toc + buf.readUInt32LE(toc + 8 + i * 8);
    const end = nameAt < buf.length ? buf.indexOf(0, nameAt) : -1;
    if (end < 0) throw icuError('ERR_ICU_BAD_TOC', what, `item ${i}: name offset outside the package`);
    const full = buf.toString('latin1', nameAt, end);
    const slash = full.indexOf('/');
    if (slash <= 0) throw icuError('ERR_ICU_BAD_TOC', what, `item ${i}: name ${JSON.stringify(full)} has no package prefix`);
    if (i === 0) packageName = full.slice(0, slash);
    else if (full.slice(0, slash) !== packageName) throw icuError('ERR_ICU_BAD_TOC', what, `item ${i}: ${JSON.stringify(full)} is not in package ${packageName}`);
    if (dataAt > buf.length || (i > 0 && dataAt < offsets[i - 1]!)) throw icuError('ERR_ICU_BAD_TOC', what, `item ${i} (${full}): data offset ${dataAt} out of order or outside the package`);
    names.push(full.slice(slash + 1));
    offsets.push(dataAt);
  }
  const items = names.map((name, i) => ({ name, data: buf.subarray(offsets[i]!, i + 1 < count ? offsets[i + 1]! : buf.length) }));
  return { header: Buffer.from(buf.subarray(0, headerSize)), packageName, items };
}

const align = (n: number): number => (n + ALIGN - 1) & ~(ALIGN - 1);

/** Writes a package: the header, the table of contents sorted by name, the items 16-byte aligned. */
export function writePackage(pkg: IcuPackage): Buffer {
  const items = [...pkg.items].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const fullNames = items.map((it) => Buffer.from(`${pkg.packageName}/${it.name}\0`, 'latin1'));
  const tocSize = 4 + items.length * 8;
  const namesSize = fullNames.reduce((s, n) => s + n.length, 0);
  let dataAt = align(pkg.header.length + tocSize + namesSize) - pkg.header.length;
  const dataOffsets = items.map((it) => {
    const at = dataAt;
    dataAt = align(pkg.header.length + at + it.data.length) - pkg.header.length;
    return at;
  });
  const out = Buffer.alloc(pkg.header.length + dataAt);
  pkg.header.copy(out, 0);
  const toc = pkg.header.length;
  out.writeUInt32LE(items.length, toc);
  let nameAt = tocSize;
  items.forEach((it, i) => {
    out.writeUInt32LE(nameAt, toc + 4 + i * 8);
    out.writeUInt32LE(dataOffsets[i]!, toc + 8 + i * 8);
    fullNames[i]!.copy(out, toc + nameAt);
    nameAt += fullNames[i]!.length;
    it.data.copy(out, toc + dataOffsets[i]!);
  });
  return out;
}

/**
 * Empties the package at `at` in `binary` in place: the header stays (ICU checks it), the
 * item count becomes 0 and everything after it zero, so ICU finds no item in it and goes
 * on to the package file in the data folder (NODE_ICU_DATA).
 */
export function emptyPackageInPlace(binary: Buffer, at: number, size: number, what: string): void {
  const region = binary.subarray(at, at + size);
  const headerSize = checkPackageHeader(region, what);
  parsePackage(region, what);
  region.writeUInt32LE(0, headerSize);
  region.fill(0, headerSize + 4);
}

/** Locale trees of the package: the top level and these folders, each with its own res_index.res. */
export const LOCALE_TREES: readonly string[] = ['', 'brkitr', 'coll', 'curr', 'lang', 'rbnf', 'region', 'unit', 'zone'];

/** A locale's resource bundle name: root, or a language of 2-3 letters with subtags (de__PHONEBOOK). */
const LOCALE_RES = /^(root|[a-z]{2,3}(_[A-Za-z0-9]*)*)\.res$/;

/** The locale of a locale bundle item ("curr/en_GB.res" -> "en_GB"), or null for any other item. */
export function localeOfItem(name: string): string | null {
  const slash = name.lastIndexOf('/');
  const tree = slash < 0 ? '' : name.slice(0, slash);
  const base = name.slice(slash + 1);
  if (!LOCALE_TREES.includes(tree) || base === 'res_index.res') return null;
  const m = LOCALE_RES.exec(base);
  return m ? base.slice(0, -4) : null;
}

export interface TrimResult {
  items: IcuItem[];
  /** Per tree ("" for the top level), the locales kept, for its new res_index.res. */
  locales: Map<string, string[]>;
  /** Names of the items left out. */
  dropped: string[];
}

/** Data that neither node nor V8 reads: character names (no \N{} in JS), StringPrep profiles, spoof checks. */
export const UNUSED_ITEMS: readonly RegExp[] = [/^unames\.icu$/, /^confusables\.cfu$/, /\.spp$/];

/**
 * Keeps the bundles of `locales` (and root) in every locale tree and every item that is
 * not locale data, except the converter tables (*.cnv, 5.2 MB: TextDecoder then knows
 * UTF-8, UTF-16 and latin1, which node and ICU decode without tables, as node's
 * small-icu builds did), transliteration (translit/), the break-iterator dictionaries
 * (*.dict), UNUSED_ITEMS and break rules (*.brk) that no kept break-iterator bundle
 * names. The trees' res_index.res items are left out: the caller adds new ones.
 */
export function trimItems(items: readonly IcuItem[], locales: readonly string[]): TrimResult {
  const wanted = new Set(['root', ...locales]);
  const kept: IcuItem[] = [];
  const dropped: string[] = [];
  const perTree = new Map<string, string[]>();
  const brk: IcuItem[] = [];
  for (const it of items) {
    const slash = it.name.lastIndexOf('/');
    const tree = slash < 0 ? '' : it.name.slice(0, slash);
    const loc = localeOfItem(it.name);
    const drop =
      tree === 'translit' ||
      it.name.endsWith('.cnv') ||
      UNUSED_ITEMS.some((re) => re.test(it.name)) ||
      it.name.endsWith('.dict') ||
      it.name.endsWith('/res_index.res') ||
      it.name === 'res_index.res' ||
      (loc !== null && !wanted.has(loc));
    if (drop) {
      dropped.push(it.name);
      continue;
    }
    if (it.name.endsWith('.brk')) {
      brk.push(it);
      continue;
    }
    kept.push(it);
    if (loc !== null && loc !== 'root') perTree.set(tree, [...(perTree.get(tree) ?? []), loc]);
  }
  // Break rules: only those a kept break-iterator bundle names (as a UTF-16 or ASCII string).
  const brkitrBundles = kept.filter((it) => it.name.startsWith('brkitr/') && it.name.endsWith('.res'));
  for (const it of brk) {
    const base = it.name.slice(it.name.lastIndexOf('/') + 1);
    const utf16 = Buffer.from(base, 'utf16le');
    const ascii = Buffer.from(base, 'latin1');
    if (brkitrBundles.some((b) => b.data.includes(utf16) || b.data.includes(ascii))) kept.push(it);
    else dropped.push(it.name);
  }
  for (const tree of LOCALE_TREES) if (items.some((it) => it.name === (tree ? `${tree}/res_index.res` : 'res_index.res'))) perTree.set(tree, (perTree.get(tree) ?? []).sort());
  return { items: kept, locales: perTree, dropped };
}

/** genrb source of a tree's res_index.res: the locales ICU reports as installed (root is implied). */
export function resIndexSource(locales: readonly string[]): string {
  for (const l of locales) if (!/^[A-Za-z0-9_]+$/.test(l)) throw new ImageBuildError('ERR_ICU_LOCALE', `locale name ${JSON.stringify(l)}: letters, digits and _ only`);
  return `res_index:table(nofallback) {\n    InstalledLocales:table {\n${locales.map((l) => `        ${l} {""}\n`).join('')}    }\n}\n`;
}
