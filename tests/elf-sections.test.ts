// Sections of an ELF file by name and zeroing some in place (appliance/image/elf-sections.ts):
// on the node binary running the test (its unwind tables), and refusals of what is no ELF.
import test from 'ava';
import { readFileSync } from 'node:fs';
import type { ImageBuildError } from '../appliance/image/debian.js';
import { elfSections, UNWIND_SECTIONS, zeroSections } from '../appliance/image/elf-sections.js';

test('node\'s unwind tables are zeroed in place; nothing else changes', (t) => {
  const original = readFileSync(process.execPath);
  const elf = Buffer.from(original);
  const sections = elfSections(elf, process.execPath);
  t.true(sections.some((s) => s.name === '.text'));
  const zeroed = zeroSections(elf, [...UNWIND_SECTIONS, '.no-such-section'], process.execPath);
  t.deepEqual(zeroed.map((s) => s.name).sort(), ['.eh_frame', '.eh_frame_hdr']);
  t.is(elf.length, original.length);
  for (const s of zeroed) t.true(elf.subarray(s.offset, s.offset + s.size).every((b) => b === 0), s.name);
  const outside = (i: number): boolean => !zeroed.some((s) => i >= s.offset && i < s.offset + s.size);
  const first = zeroed.reduce((m, s) => Math.min(m, s.offset), Infinity);
  t.true(elf.subarray(0, first).equals(original.subarray(0, first)), 'bytes before the tables unchanged');
  let differ = 0;
  for (let i = first; i < elf.length; i++) if (elf[i] !== original[i] && outside(i)) differ++;
  t.is(differ, 0, 'bytes outside the tables unchanged');
});

test('what is no ELF file, or whose section table lies outside it, is refused naming the file', (t) => {
  t.is(t.throws<ImageBuildError>(() => elfSections(Buffer.from('#!/bin/sh\n'.padEnd(100)), '/x/script'))?.code, 'ERR_ELF_FORMAT');
  const elf = Buffer.from(readFileSync(process.execPath).subarray(0, 4096));
  const e = t.throws<ImageBuildError>(() => elfSections(elf, '/x/truncated-node'));
  t.is(e?.code, 'ERR_ELF_FORMAT');
  t.regex(e?.message ?? '', /^\/x\/truncated-node: its section header table lies outside the file$/);
});
