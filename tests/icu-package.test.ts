// ICU's common data package (appliance/image/icu-package.ts): reading and writing it,
// trimming it to English, emptying node's linked copy in place; the refusals (a bad
// header, a table of contents pointing outside, no icudt*_dat symbol) and the image
// builder's fallback to node as it is (icu-data.ts). On synthetic packages and ELF
// files, and on the node binary running this test when it has the symbol.
import test from 'ava';
import { readFileSync, realpathSync } from 'node:fs';
import type { ImageBuildError } from '../appliance/image/debian.js';
import { prepareIcuData } from '../appliance/image/icu-data.js';
import {
  checkPackageHeader,
  emptyPackageInPlace,
  findEmbeddedIcu,
  localeOfItem,
  parsePackage,
  resIndexSource,
  trimItems,
  writePackage,
  type IcuItem,
} from '../appliance/image/icu-package.js';

/** A data header like ICU's: headerSize 32, magic, UDataInfo (little-endian, ASCII, "CmnD" 1.0). */
function header(format = 'CmnD'): Buffer {
  const h = Buffer.alloc(32);
  h.writeUInt16LE(32, 0);
  h[2] = 0xda;
  h[3] = 0x27;
  h.writeUInt16LE(20, 4);
  h.write(format, 12, 'latin1');
  h[16] = 1;
  return h;
}

const item = (name: string, text: string | Buffer): IcuItem => ({ name, data: typeof text === 'string' ? Buffer.from(text.padEnd(16, '\0'), 'latin1') : text });

const ITEMS: IcuItem[] = [
  item('root.res', 'root'),
  item('en.res', 'en'),
  item('en_US.res', 'en_US'),
  item('de.res', 'de'),
  item('de__PHONEBOOK.res', 'de phonebook'),
  item('res_index.res', 'old index'),
  item('pool.res', 'pool'),
  item('supplementalData.res', 'supplemental'),
  item('zoneinfo64.res', 'zones'),
  item('metadata.res', 'metadata'),
  item('uprops.icu', 'properties'),
  item('unames.icu', 'names'),
  item('rfc3491.spp', 'stringprep'),
  item('cnvalias.icu', 'aliases'),
  item('ibm-5348_P100-1997.cnv', Buffer.alloc(3200, 1)),
  item('gb18030-2022.cnv', Buffer.alloc(9000, 2)),
  item('coll/root.res', 'coll root'),
  item('coll/ucadata.icu', 'uca'),
  item('coll/de.res', 'coll de'),
  item('coll/res_index.res', 'coll index'),
  item('brkitr/root.res', Buffer.concat([Buffer.from('boundaries '), Buffer.from('word.brk', 'utf16le'), Buffer.from('cjdict.dict', 'utf16le')])),
  item('brkitr/en_US_POSIX.res', Buffer.concat([Buffer.from('boundaries '), Buffer.from('word_POSIX.brk', 'utf16le')])),
  item('brkitr/word.brk', 'word rules'),
  item('brkitr/word_POSIX.brk', 'posix word rules'),
  item('brkitr/line_cj.brk', 'cj line rules'),
  item('brkitr/cjdict.dict', 'dictionary'),
  item('brkitr/res_index.res', 'brkitr index'),
  item('translit/root.res', 'translit'),
  item('zone/en.res', 'zone en'),
  item('zone/fr.res', 'zone fr'),
  item('zone/tzdbNames.res', 'tzdb'),
  item('zone/res_index.res', 'zone index'),
];

function pkg(): Buffer {
  return writePackage({ header: header(), packageName: 'icudt99l', items: ITEMS });
}

test('a written package parses back: sorted names with the package prefix, 16-byte aligned items', (t) => {
  const buf = pkg();
  t.is(checkPackageHeader(buf, 'test'), 32);
  const p = parsePackage(buf, 'test');
  t.is(p.packageName, 'icudt99l');
  const names = p.items.map((i) => i.name);
  t.deepEqual(names, [...names].sort());
  t.deepEqual(names, ITEMS.map((i) => i.name).sort());
  for (const it of p.items) {
    const orig = ITEMS.find((i) => i.name === it.name)!;
    t.true(it.data.subarray(0, orig.data.length).equals(orig.data), it.name);
    t.is((it.data.byteOffset - p.items[0]!.data.byteOffset) % 16, 0, `${it.name} aligned`);
  }
  const count = buf.readUInt32LE(32);
  t.is(count, ITEMS.length);
  const firstName = 32 + buf.readUInt32LE(36);
  t.is(buf.toString('latin1', firstName, buf.indexOf(0, firstName)), `icudt99l/${names[0]}`);
});

test('locale bundles are told from other items', (t) => {
  t.is(localeOfItem('en.res'), 'en');
  t.is(localeOfItem('curr/en_GB.res'), 'en_GB');
  t.is(localeOfItem('coll/de__PHONEBOOK.res'), 'de__PHONEBOOK');
  t.is(localeOfItem('root.res'), 'root');
  t.is(localeOfItem('ckb_IQ.res'), 'ckb_IQ');
  for (const other of ['res_index.res', 'pool.res', 'metadata.res', 'zoneinfo64.res', 'zone/tzdbNames.res', 'coll/ucadata.icu', 'brkitr/word.brk', 'translit/en.res', 'supplementalData.res']) {
    t.is(localeOfItem(other), null, other);
  }
});

test('trimming keeps root and English in every tree and what is not locale data, drops the rest', (t) => {
  const r = trimItems(parsePackage(pkg(), 'test').items, ['en', 'en_US', 'en_US_POSIX']);
  const kept = new Set(r.items.map((i) => i.name));
  for (const name of ['root.res', 'en.res', 'en_US.res', 'pool.res', 'supplementalData.res', 'zoneinfo64.res', 'metadata.res', 'uprops.icu', 'cnvalias.icu', 'coll/root.res', 'coll/ucadata.icu', 'brkitr/root.res', 'brkitr/en_US_POSIX.res', 'brkitr/word.brk', 'brkitr/word_POSIX.brk', 'zone/en.res', 'zone/tzdbNames.res']) {
    t.true(kept.has(name), `keeps ${name}`);
  }
  for (const name of ['de.res', 'de__PHONEBOOK.res', 'coll/de.res', 'zone/fr.res', 'translit/root.res', 'brkitr/cjdict.dict', 'brkitr/line_cj.brk', 'ibm-5348_P100-1997.cnv', 'gb18030-2022.cnv', 'unames.icu', 'rfc3491.spp', 'res_index.res', 'coll/res_index.res']) {
    t.false(kept.has(name), `drops ${name}`);
    t.true(r.dropped.includes(name), `lists ${name} as dropped`);
  }
  t.deepEqual(Object.fromEntries(r.locales), { '': ['en', 'en_US'], brkitr: ['en_US_POSIX'], coll: [], zone: ['en'] }, 'the locales of each tree that had a res_index.res');
});

test('res_index source lists the locales for genrb; a bad locale name is refused', (t) => {
  const src = resIndexSource(['en', 'en_US']);
  t.regex(src, /^res_index:table\(nofallback\) \{\n {4}InstalledLocales:table \{\n {8}en \{""\}\n {8}en_US \{""\}\n {4}\}\n\}\n$/);
  t.is(t.throws<ImageBuildError>(() => resIndexSource(['en"} x {']))?.code, 'ERR_ICU_LOCALE');
});

test('emptying a package in place keeps its header, sets the count to 0 and zeroes the rest', (t) => {
  const inner = pkg();
  const binary = Buffer.concat([Buffer.alloc(100, 0xee), inner, Buffer.alloc(50, 0xee)]);
  emptyPackageInPlace(binary, 100, inner.length, 'test');
  t.true(binary.subarray(100, 132).equals(inner.subarray(0, 32)), 'header kept');
  t.is(binary.readUInt32LE(132), 0);
  t.true(binary.subarray(136, 100 + inner.length).every((b) => b === 0));
  t.true(binary.subarray(0, 100).every((b) => b === 0xee) && binary.subarray(100 + inner.length).every((b) => b === 0xee), 'nothing outside touched');
  t.is(parsePackage(binary.subarray(100, 100 + inner.length), 'test').items.length, 0, 'still a valid, empty package');
});

test('bad headers and tables of contents are refused with a code that names the package', (t) => {
  const cases: Array<[string, (b: Buffer) => void, string, RegExp]> = [
    ['wrong magic', (b) => (b[2] = 0x00), 'ERR_ICU_BAD_HEADER', /magic bytes 0x0 0x27/],
    ['big-endian', (b) => (b[8] = 1), 'ERR_ICU_BAD_HEADER', /big-endian/],
    ['not a package', (b) => b.write('ResB', 12, 'latin1'), 'ERR_ICU_BAD_HEADER', /"ResB".*"CmnD"/],
    ['header size past the end', (b) => b.writeUInt16LE(0xfff0, 0), 'ERR_ICU_BAD_HEADER', /header size 65520/],
    ['too many items', (b) => b.writeUInt32LE(1_000_000, 32), 'ERR_ICU_BAD_TOC', /1000000 items do not fit/],
    ['name outside', (b) => b.writeUInt32LE(0x7fffffff, 36), 'ERR_ICU_BAD_TOC', /item 0: name offset outside/],
    ['data out of order', (b) => b.writeUInt32LE(0, 48), 'ERR_ICU_BAD_TOC', /item 1 .*out of order/],
  ];
  for (const [what, spoil, code, message] of cases) {
    const b = pkg();
    spoil(b);
    const e = t.throws<ImageBuildError>(() => parsePackage(b, 'icudt99_dat in /x/node'), undefined, what);
    t.is(e?.code, code, what);
    t.regex(e?.message ?? '', /^icudt99_dat in \/x\/node: /, `${what}: names the package`);
    t.regex(e?.message ?? '', message, what);
    t.throws<ImageBuildError>(() => emptyPackageInPlace(b, 0, b.length, 'test'), undefined, `${what}: not emptied`);
  }
  t.is(t.throws<ImageBuildError>(() => checkPackageHeader(Buffer.alloc(8), 'tiny'))?.code, 'ERR_ICU_BAD_HEADER');
});

/** A minimal little-endian ELF64 file: .rodata holding `payload` at address 0x10000, .dynsym, .dynstr. */
function fakeElf(payload: Buffer, symbol: string | null): Buffer {
  const names = Buffer.from(`\0${symbol ?? 'something_else'}\0`, 'latin1');
  const rodataOff = 0x100;
  const symOff = rodataOff + payload.length + 8;
  const strOff = symOff + 48;
  const shOff = strOff + names.length + 8;
  const elf = Buffer.alloc(shOff + 4 * 64);
  elf.writeUInt32LE(0x464c457f, 0);
  elf[4] = 2;
  elf[5] = 1;
  elf.writeBigUInt64LE(BigInt(shOff), 0x28);
  elf.writeUInt16LE(64, 0x3a);
  elf.writeUInt16LE(4, 0x3c);
  payload.copy(elf, rodataOff);
  // Symbol 1: name at 1, section 1, value 0x10000, size payload.length.
  elf.writeUInt32LE(1, symOff + 24);
  elf.writeUInt16LE(1, symOff + 24 + 6);
  elf.writeBigUInt64LE(0x10000n, symOff + 24 + 8);
  elf.writeBigUInt64LE(BigInt(payload.length), symOff + 24 + 16);
  names.copy(elf, strOff);
  const sh = (i: number, type: number, addr: number, off: number, size: number, link: number, entsize: number): void => {
    const at = shOff + i * 64;
    elf.writeUInt32LE(type, at + 4);
    elf.writeBigUInt64LE(BigInt(addr), at + 0x10);
    elf.writeBigUInt64LE(BigInt(off), at + 0x18);
    elf.writeBigUInt64LE(BigInt(size), at + 0x20);
    elf.writeUInt32LE(link, at + 0x28);
    elf.writeBigUInt64LE(BigInt(entsize), at + 0x38);
  };
  sh(1, 1, 0x10000, rodataOff, payload.length, 0, 0);
  sh(2, 11, 0, symOff, 48, 3, 24);
  sh(3, 3, 0, strOff, names.length, 0, 0);
  return elf;
}

test('node\'s linked package is found by its dynamic symbol; a missing symbol and a non-ELF file are refused', (t) => {
  const p = pkg();
  const elf = fakeElf(p, 'icudt99_dat');
  const found = findEmbeddedIcu(elf, '/x/node');
  t.deepEqual(found, { symbol: 'icudt99_dat', version: 99, offset: 0x100, size: p.length });
  t.true(elf.subarray(found.offset, found.offset + found.size).equals(p));

  const missing = t.throws<ImageBuildError>(() => findEmbeddedIcu(fakeElf(p, 'icudt99_data'), '/x/small-icu-node'));
  t.is(missing?.code, 'ERR_ICU_SYMBOL_MISSING');
  t.regex(missing?.message ?? '', /^\/x\/small-icu-node: has no dynamic symbol icudt<NN>_dat/);
  t.is(t.throws<ImageBuildError>(() => findEmbeddedIcu(Buffer.from('#!/bin/sh\necho not elf\n'.padEnd(80)), '/x/script'))?.code, 'ERR_ICU_NOT_ELF');

  const shOff = Number(elf.readBigUInt64LE(0x28));
  const symOff = Number(elf.readBigUInt64LE(shOff + 2 * 64 + 0x18));
  const big = Buffer.from(elf);
  big.writeBigUInt64LE(BigInt(p.length * 100), symOff + 24 + 16);
  t.is(t.throws<ImageBuildError>(() => findEmbeddedIcu(big, '/x/node'))?.code, 'ERR_ICU_SYMBOL_RANGE');
});

test('the image builder leaves a node without linked ICU data as it is, and says why', async (t) => {
  const r = await prepareIcuData({ node: '/bin/true', icu: 'en' });
  t.is(r.node, realpathSync('/bin/true'), 'node as it is');
  t.true(r.strip);
  t.is(r.dataFile, undefined);
  t.deepEqual(r.env, {});
  t.regex(r.note, /^ICU data: full, node left as it is .*(ERR_ICU_SYMBOL_MISSING|genrb not found)/);
  const full = await prepareIcuData({ node: process.execPath, icu: 'full' });
  t.deepEqual({ strip: full.strip, env: full.env, dataFile: full.dataFile }, { strip: true, env: {}, dataFile: undefined });
});

const execPath = readFileSync(process.execPath);
let hostHasIcu = true;
try {
  findEmbeddedIcu(execPath, process.execPath);
} catch {
  hostHasIcu = false;
}

(hostHasIcu ? test : test.skip)('this node\'s linked package parses, and trimming it to English keeps what Intl needs', (t) => {
  const at = findEmbeddedIcu(execPath, process.execPath);
  t.is(at.symbol, `icudt${process.versions.icu!.split('.')[0]}_dat`);
  const p = parsePackage(execPath.subarray(at.offset, at.offset + at.size), at.symbol);
  t.is(p.packageName, `icudt${at.version}l`);
  const r = trimItems(p.items, ['en', 'en_US', 'en_US_POSIX']);
  const kept = new Set(r.items.map((i) => i.name));
  for (const name of ['root.res', 'en.res', 'pool.res', 'zoneinfo64.res', 'coll/ucadata.icu', 'coll/root.res', 'brkitr/word.brk', 'nfkc.nrm', 'cnvalias.icu']) t.true(kept.has(name), name);
  t.false([...kept].some((n) => n.startsWith('translit/') || n.endsWith('.dict') || n.endsWith('.cnv') || /(^|\/)(de|fr|ja)\.res$/.test(n)));
  const bytes = r.items.reduce((s, i) => s + i.data.length, 0);
  t.true(bytes < at.size / 5, `${bytes} of ${at.size} bytes kept`);
  t.log(`${r.items.length} of ${p.items.length} items, ${(bytes / 1e6).toFixed(1)} of ${(at.size / 1e6).toFixed(1)} MB`);
});
