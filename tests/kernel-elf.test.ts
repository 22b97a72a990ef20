// The guest kernel's ELF file without its padding (appliance/image/kernel-elf.ts): the
// same memory image from a smaller file (long zero runs cut, long 0xcc fill turned to
// zeros), the PVH note moved with its bytes, and refusals of what is no kernel ELF.
import test from 'ava';
import type { ImageBuildError } from '../appliance/image/debian.js';
import { keptRanges, loadedImage, MIN_FILL_RUN, MIN_ZERO_RUN, programHeaders, repackKernelElf } from '../appliance/image/kernel-elf.js';

const BASE_V = 0xffffffff81000000n;
const BASE_P = 0x1000000n;

/** An ELF like vmlinux: segments at 2 MiB file offsets, one with zero and 0xcc runs and a note inside, one with bss. */
function fakeKernel(): { elf: Buffer; note: Buffer } {
  const seg1 = Buffer.alloc(300_000, 0x90);
  seg1.fill(0xcc, 10_000, 10_000 + MIN_FILL_RUN + 5); // alignment fill: cut
  seg1.fill(0, 100_000, 100_000 + 2 * MIN_ZERO_RUN); // a zero gap: cut
  seg1.fill(0, 200_000, 200_000 + MIN_ZERO_RUN - 1); // too short: kept
  seg1.fill(0xcc, 250_000, 250_000 + 100); // short fill: kept
  const note = Buffer.from('\x04\x00\x00\x00\x08\x00\x00\x00\x12\x00\x00\x00Xen\x00\x00\x00\x00\x01\x00\x00\x00\x00', 'latin1');
  note.copy(seg1, 220_000);
  const seg2 = Buffer.alloc(50_000, 0x11);
  seg2.fill(0, 40_000); // a zero tail: cut, left to memsz
  const off1 = 0x200000;
  const off2 = 0x400000;
  const elf = Buffer.alloc(off2 + seg2.length);
  elf.writeUInt32LE(0x464c457f, 0);
  elf[4] = 2;
  elf[5] = 1;
  elf.writeUInt16LE(2, 0x10); // ET_EXEC
  elf.writeUInt16LE(0x3e, 0x12); // x86-64
  elf.writeUInt32LE(1, 0x14);
  elf.writeBigUInt64LE(0x1000000n, 0x18); // entry
  elf.writeBigUInt64LE(64n, 0x20); // phoff
  elf.writeBigUInt64LE(BigInt(elf.length - 64), 0x28); // shoff: dropped by the repack
  elf.writeUInt16LE(64, 0x34);
  elf.writeUInt16LE(56, 0x36);
  elf.writeUInt16LE(3, 0x38);
  const ph = (i: number, type: number, off: number, v: bigint, p: bigint, filesz: number, memsz: number, align: number): void => {
    const o = 64 + i * 56;
    elf.writeUInt32LE(type, o);
    elf.writeUInt32LE(5, o + 4);
    elf.writeBigUInt64LE(BigInt(off), o + 8);
    elf.writeBigUInt64LE(v, o + 16);
    elf.writeBigUInt64LE(p, o + 24);
    elf.writeBigUInt64LE(BigInt(filesz), o + 32);
    elf.writeBigUInt64LE(BigInt(memsz), o + 40);
    elf.writeBigUInt64LE(BigInt(align), o + 48);
  };
  ph(0, 1, off1, BASE_V, BASE_P, seg1.length, seg1.length, 0x200000);
  ph(1, 1, off2, BASE_V + 0x200000n, BASE_P + 0x200000n, seg2.length, seg2.length + 70_000, 0x200000);
  ph(2, 4, off1 + 220_000, BASE_V + 220_000n, BASE_P + 220_000n, note.length, note.length, 4);
  seg1.copy(elf, off1);
  seg2.copy(elf, off2);
  return { elf, note };
}

test('the repacked kernel gives the same memory image from a smaller file; 0xcc fill becomes zeros', (t) => {
  const { elf, note } = fakeKernel();
  const packed = repackKernelElf(elf, 'vmlinux');
  t.true(packed.length < 400_000, `${packed.length} bytes (was ${elf.length})`);
  const before = loadedImage(elf, 'vmlinux');
  const after = loadedImage(packed, 'packed');
  t.is(after.base, before.base);
  t.is(after.bytes.length, before.bytes.length, 'the same extent, bss included');
  let changed = 0;
  for (let i = 0; i < before.bytes.length; i++) {
    if (before.bytes[i] === after.bytes[i]) continue;
    t.is(before.bytes[i], 0xcc, `byte ${i}`);
    t.is(after.bytes[i], 0);
    changed++;
  }
  t.is(changed, MIN_FILL_RUN + 5, 'only the long fill run differs');
  t.is(after.bytes[250_000], 0xcc, 'short fill kept');

  const headers = programHeaders(packed, 'packed');
  const noteHeader = headers.find((h) => h.type === 4)!;
  t.true(packed.subarray(noteHeader.offset, noteHeader.offset + noteHeader.filesz).equals(note), 'the PVH note moved with its bytes');
  t.is(noteHeader.vaddr, BASE_V + 220_000n);
  for (const h of headers.filter((x) => x.type === 1)) {
    t.is(Number(h.vaddr % 16n), h.offset % 16, 'offsets congruent to addresses');
    t.true(h.memsz >= h.filesz);
  }
  t.is(packed.readBigUInt64LE(0x28), 0n, 'no section headers');
  t.is(packed.readUInt16LE(0x3c), 0);
  t.is(packed.readBigUInt64LE(0x18), 0x1000000n, 'entry kept');
});

test('runs are cut only when long enough', (t) => {
  const b = Buffer.alloc(3 * MIN_ZERO_RUN, 1);
  b.fill(0, MIN_ZERO_RUN, 2 * MIN_ZERO_RUN);
  t.deepEqual(keptRanges(b), [
    [0, MIN_ZERO_RUN],
    [2 * MIN_ZERO_RUN, 3 * MIN_ZERO_RUN],
  ]);
  b.fill(1, MIN_ZERO_RUN, MIN_ZERO_RUN + 1);
  t.deepEqual(keptRanges(b), [[0, 3 * MIN_ZERO_RUN]]);
  t.deepEqual(keptRanges(Buffer.alloc(MIN_ZERO_RUN)), []);
});

test('what is no kernel ELF is refused naming the file', (t) => {
  const code = (f: () => unknown): string | undefined => t.throws<ImageBuildError>(f)?.code;
  t.is(code(() => repackKernelElf(Buffer.from('MZ not an ELF file'.padEnd(80)), '/x/bzImage')), 'ERR_KERNEL_ELF');
  const { elf } = fakeKernel();
  const noHeaders = Buffer.from(elf);
  noHeaders.writeUInt16LE(0, 0x38);
  const e = t.throws<ImageBuildError>(() => repackKernelElf(noHeaders, '/x/vmlinux'));
  t.is(e?.code, 'ERR_KERNEL_ELF');
  t.regex(e?.message ?? '', /^\/x\/vmlinux: program header table/);
  const outside = Buffer.from(elf);
  outside.writeBigUInt64LE(BigInt(elf.length * 2), 64 + 32); // segment 0's filesz
  t.regex(t.throws<ImageBuildError>(() => repackKernelElf(outside, '/x/vmlinux'))?.message ?? '', /segment 0 .* lies outside the file/);
  const badNote = Buffer.from(elf);
  badNote.writeBigUInt64LE(0x10n, 64 + 2 * 56 + 8); // the note in the headers, which no piece holds
  t.regex(t.throws<ImageBuildError>(() => repackKernelElf(badNote, '/x/vmlinux'))?.message ?? '', /does not lie in one kept piece/);
});
