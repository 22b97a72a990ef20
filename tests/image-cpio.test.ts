// The newc cpio writer, checked by reading back what it wrote with our own parser.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpioError, CpioWriter, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, archivePath, parseCpio } from '../appliance/image/cpio.js';

const dir = mkdtempSync(join(tmpdir(), 'tsv-cpio-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

test('writes files, directories, symlinks and device nodes that parse back', (t) => {
  const big = randomBytes(2 * 1024 * 1024 + 3); // crosses the 1 MiB copy chunk, odd length
  const host = join(dir, 'big.bin');
  writeFileSync(host, big);
  const out = join(dir, 'a.cpio');
  const w = new CpioWriter(out);
  w.directory('/etc');
  w.file('/etc/hostname', 'guest\n', 0o644);
  w.file('/init', '#!/bin/sh\n', 0o755);
  w.fileFromHost('/usr/lib/deep/nested/big.bin', host, 0o600);
  w.symlink('/lib', 'usr/lib');
  w.charDevice('/dev/console', 5, 1, 0o600);
  w.file('/empty', '');
  w.finish();
  t.is(statSync(out).size, w.size);
  t.is(w.size % 4, 0);

  const entries = parseCpio(readFileSync(out));
  const byName = new Map(entries.map((e) => [e.name, e]));
  t.deepEqual(
    entries.map((e) => e.name),
    ['etc', 'etc/hostname', 'init', 'usr', 'usr/lib', 'usr/lib/deep', 'usr/lib/deep/nested', 'usr/lib/deep/nested/big.bin', 'lib', 'dev', 'dev/console', 'empty'],
    'parents come before children and are created automatically',
  );
  t.is(byName.get('etc')!.mode, S_IFDIR | 0o755);
  t.is(byName.get('etc/hostname')!.data.toString(), 'guest\n');
  t.is(byName.get('init')!.mode, S_IFREG | 0o755);
  const b = byName.get('usr/lib/deep/nested/big.bin')!;
  t.is(b.mode, S_IFREG | 0o600);
  t.true(b.data.equals(big));
  const l = byName.get('lib')!;
  t.is(l.mode & S_IFMT, S_IFLNK);
  t.is(l.data.toString(), 'usr/lib');
  const c = byName.get('dev/console')!;
  t.is(c.mode, S_IFCHR | 0o600);
  t.is(c.rdevMajor, 5);
  t.is(c.rdevMinor, 1);
  t.is(c.data.length, 0);
  t.is(byName.get('empty')!.data.length, 0);
  t.is(new Set(entries.map((e) => e.ino)).size, entries.length, 'inode numbers are unique');
  t.true(entries.every((e) => e.uid === 0 && e.gid === 0 && e.mtime === 0));
});

test('header layout: magic, 8-hex fields, name size with NUL, 4-byte alignment, trailer', (t) => {
  const out = join(dir, 'b.cpio');
  const w = new CpioWriter(out);
  w.file('/x', 'abc', 0o644);
  w.finish();
  const buf = readFileSync(out);
  t.is(buf.toString('ascii', 0, 6), '070701');
  // namesize field (12th) = "x\0" = 2; filesize (7th) = 3
  t.is(parseInt(buf.toString('ascii', 6 + 11 * 8, 6 + 12 * 8), 16), 2);
  t.is(parseInt(buf.toString('ascii', 6 + 6 * 8, 6 + 7 * 8), 16), 3);
  // header 110 + name 2 = 112 (aligned); data 3 + 1 pad -> the trailer starts at 116
  t.is(buf.toString('ascii', 112, 115), 'abc');
  t.is(buf[115], 0);
  t.is(buf.toString('ascii', 116, 122), '070701');
  t.true(buf.includes('TRAILER!!!'));
  t.is(buf.length % 4, 0);
});

test('concatenated archives parse as one (as the kernel reads them)', (t) => {
  const a = join(dir, 'c1.cpio');
  const b = join(dir, 'c2.cpio');
  let w = new CpioWriter(a);
  w.file('/one', '1');
  w.finish();
  w = new CpioWriter(b);
  w.file('/two', '22');
  w.finish();
  const entries = parseCpio(Buffer.concat([readFileSync(a), Buffer.alloc(512), readFileSync(b)]));
  t.deepEqual(entries.map((e) => [e.name, e.data.toString()]), [['one', '1'], ['two', '22']]);
});

test('rejects duplicates, escaping paths, and files under non-directories', (t) => {
  const w = new CpioWriter(join(dir, 'd.cpio'));
  w.file('/a', 'x');
  t.throws(() => w.file('/a', 'y'), { instanceOf: CpioError, message: /duplicate/ });
  t.throws(() => w.file('/a/b', 'y'), { instanceOf: CpioError, message: /not a directory/ });
  t.throws(() => w.file('/../etc/passwd', 'y'), { instanceOf: CpioError, message: /escapes/ });
  t.throws(() => w.directory('/a'), { instanceOf: CpioError });
  w.directory('/d');
  w.directory('/d'); // again: fine
  w.finish();
  t.throws(() => w.file('/late', 'x'), { instanceOf: CpioError, message: /finished/ });
  t.is(archivePath('//usr/./lib/'), 'usr/lib');
});

test('the parser refuses damaged archives', (t) => {
  const out = join(dir, 'e.cpio');
  const w = new CpioWriter(out);
  w.file('/f', 'hello');
  w.finish();
  const buf = readFileSync(out);
  const badMagic = Buffer.from(buf);
  badMagic.write('070707', 0, 'ascii');
  t.throws(() => parseCpio(badMagic), { instanceOf: CpioError, message: /magic/ });
  t.throws(() => parseCpio(buf.subarray(0, 100)), { instanceOf: CpioError, message: /truncated/ });
  const badSize = Buffer.from(buf);
  badSize.write('7fffffff', 6 + 6 * 8, 'ascii');
  t.throws(() => parseCpio(badSize), { instanceOf: CpioError, message: /truncated data/ });
});
