// Boots the QEMU guest once per machine with a vhost-user-fs device served by Debian's C
// virtiofsd and runs appliance/guest/fs-tree.ts in it: our virtio-fs driver on the
// machine's transport (virtio-mmio on microvm, modern PCI on q35) walks a host tree
// (files of 0, 1, 4095, 4096, 4097 bytes, 133 KiB and 16 MiB, nested and empty
// directories, symlinks to a file, through '..', and to a directory), hashes every file
// read with readFile and with readFileDma, tries operations that must fail (ENOENT,
// ENOTDIR, EISDIR, EINVAL), and runs 64 reads at once. The test compares everything the
// guest printed with the host's own view of the tree (node:fs on the same folder).
import test from 'ava';
import { VIRTIOFSD_PATH } from '../appliance/qemu/virtiofsd.js';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
// Types only: importing the guest program itself would run its boot().
import type { EntryView, ErrorCase, ErrorOutcome, TreeResult } from '../appliance/guest/fs-tree.js';
import { ADDON, Cleanup, MACHINES, bundlePath, deviceOpenedPattern, guestTestsReady, launchGuest, resultLine, startVirtiofsd } from './support/qemu-guest.js';

const bundle = bundlePath('fs-tree.js');
const RESULT_MARKER = 'fs-tree-result: ';

const FILES: Record<string, number> = {
  'empty.bin': 0,
  'one.bin': 1,
  'p4095.bin': 4095,
  'p4096.bin': 4096,
  'p4097.bin': 4097,
  'page133k.html': 133 * 1024,
  'big16m.bin': 16 * 1024 * 1024,
  'a/top.txt': 300,
  'a/b/mid.bin': 65537,
  'a/b/c/deep.txt': 12,
};
const DIRS = ['a', 'a/b', 'a/b/c', 'a/empty-dir'];
const LINKS: Record<string, string> = {
  'link-page': 'page133k.html', // to a file in the same directory
  'a/b/up-link': '../../one.bin', // through '..'
  'a/to-b': 'b', // to a directory
};
/** Operations that must fail; the host's node:fs decides the expected outcome. */
const ERROR_CASES: ErrorCase[] = [
  { op: 'stat', path: '/missing.txt' },
  { op: 'readFile', path: '/missing.txt' },
  { op: 'readFileDma', path: '/a/nothing/deeper.txt' },
  { op: 'readdir', path: '/a/missing-dir' },
  { op: 'stat', path: '/one.bin/x' },
  { op: 'readFile', path: '/one.bin/x' },
  { op: 'readFile', path: '/link-page/x' },
  { op: 'readdir', path: '/one.bin' },
  { op: 'readFile', path: '/a' },
  { op: 'readFileDma', path: '/a/b' },
  { op: 'readFile', path: '/a/to-b' },
  { op: 'readlink', path: '/one.bin' },
];

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** What node:fs on the host says for the same operation. */
function hostOutcome(share: string, c: ErrorCase): { code: string; errno: number | null } {
  const p = join(share, c.path);
  try {
    switch (c.op) {
      case 'stat':
        fs.statSync(p);
        break;
      case 'lstat':
        fs.lstatSync(p);
        break;
      case 'readFile':
      case 'readFileDma':
      case 'open':
        fs.readFileSync(p);
        break;
      case 'readdir':
        fs.readdirSync(p);
        break;
      case 'readlink':
        fs.readlinkSync(p);
        break;
    }
    return { code: 'ok', errno: null };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return { code: err.code ?? 'unknown', errno: err.errno ?? null };
  }
}

/** The host's view of the tree, in the shape the guest reports. */
function hostView(share: string): Pick<TreeResult, 'entries' | 'dirs' | 'files'> {
  const view: Pick<TreeResult, 'entries' | 'dirs' | 'files'> = { entries: {}, dirs: {}, files: {} };
  const walk = (dir: string): void => {
    const dirents = fs.readdirSync(join(share, dir), { withFileTypes: true });
    const types: Record<string, 'file' | 'dir' | 'symlink' | 'other'> = {};
    for (const d of dirents) types[d.name] = d.isFile() ? 'file' : d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'symlink' : 'other';
    const names = dirents.map((d) => d.name).sort();
    view.dirs[dir] = { names, types };
    for (const name of names) {
      const path = dir === '/' ? `/${name}` : `${dir}/${name}`;
      const st = fs.lstatSync(join(share, path));
      const e: EntryView = { mode: st.mode, size: st.size };
      let readable = st.isFile();
      if (st.isSymbolicLink()) {
        e.target = fs.readlinkSync(join(share, path));
        const through = fs.statSync(join(share, path));
        e.targetMode = through.mode;
        e.targetSize = through.size;
        readable = through.isFile();
      }
      view.entries[path] = e;
      if (readable) {
        const data = fs.readFileSync(join(share, path));
        const h = sha256(data);
        view.files[path] = { size: data.length, sha256: h, dmaSize: data.length, dmaSha256: h };
      }
      if (st.isDirectory()) walk(path);
    }
  };
  walk('/');
  return view;
}

const guestTest = guestTestsReady('guest-fs-tree', [VIRTIOFSD_PATH, bundle, ADDON]) ? test.serial : test.skip;

for (const machine of MACHINES) {
  guestTest(`${machine}: our virtio-fs driver in the guest sees the host tree exactly as the host does`, async (t) => {
    const cleanup = new Cleanup();
    try {
      const dir = cleanup.tempDir('guest-fs-tree-');
      const share = join(dir, 'share');
      const socket = join(dir, 'fs.sock');
      for (const d of DIRS) fs.mkdirSync(join(share, d), { recursive: true });
      for (const [path, size] of Object.entries(FILES)) fs.writeFileSync(join(share, path), randomBytes(size));
      for (const [path, target] of Object.entries(LINKS)) fs.symlinkSync(target, join(share, path));

      const vfs = await startVirtiofsd(cleanup, { socketPath: socket, source: share });
      const qemu = await launchGuest(
        machine,
        {
          main: bundle,
          name: 'node-guest-fs-tree',
          args: [`--errors=${Buffer.from(JSON.stringify(ERROR_CASES)).toString('base64url')}`],
          virtiofs: { socket, tag: 'tree' },
          timeoutMs: 15 * 60 * 1000,
        },
        cleanup,
      );
      const exit = await qemu.exited;
      const text = qemu.console();
      t.is(exit.guestStatus, 0, `${text.slice(-3000)}\nvirtiofsd: ${vfs.stderr()}`);
      t.regex(text, deviceOpenedPattern(machine, 26));
      const result = resultLine<TreeResult>(text, RESULT_MARKER);
      if (result === null) return t.fail(`no result line:\n${text.slice(-3000)}`);
      t.is(result.tag, 'tree');

      const host = hostView(share);
      // Sanity of the host view itself: every file, directory and link made above is in it.
      t.deepEqual(Object.keys(host.entries).sort(), [...Object.keys(FILES), ...DIRS, ...Object.keys(LINKS)].map((p) => `/${p}`).sort());

      t.deepEqual(Object.keys(result.dirs).sort(), Object.keys(host.dirs).sort(), 'the directories walked');
      for (const [d, v] of Object.entries(host.dirs)) t.deepEqual(result.dirs[d], v, `readdir ${d}`);
      t.deepEqual(Object.keys(result.entries).sort(), Object.keys(host.entries).sort(), 'the entries seen');
      for (const [p, v] of Object.entries(host.entries)) t.deepEqual(result.entries[p], v, `lstat/stat/readlink ${p}`);
      t.deepEqual(Object.keys(result.files).sort(), Object.keys(host.files).sort(), 'the files read');
      for (const [p, v] of Object.entries(host.files)) {
        const g = result.files[p];
        t.is(g?.size, v.size, `${p}: size read by readFile`);
        t.is(g?.sha256, v.sha256, `${p}: SHA-256 read by readFile`);
        t.is(g?.dmaSize, v.size, `${p}: size read by readFileDma`);
        t.is(g?.dmaSha256, v.sha256, `${p}: SHA-256 read by readFileDma`);
      }

      const expected: ErrorOutcome[] = ERROR_CASES.map((c) => ({ ...c, ...hostOutcome(share, c), syscall: null }));
      t.true(expected.every((e) => e.code !== 'ok'), 'every error case fails on the host too');
      t.deepEqual(result.errors.map((e) => e.code), expected.map((e) => e.code), 'error codes: guest vs host');
      t.deepEqual(result.errors.map((e) => e.errno), expected.map((e) => e.errno), 'errnos: guest vs host');
      for (const code of ['ENOENT', 'ENOTDIR', 'EISDIR']) t.true(result.errors.some((e) => e.code === code), `${code} is covered`);
      t.log(result.errors.map((e) => `${e.op} ${e.path}: ${e.code} (${e.syscall})`).join('\n'));

      t.is(result.concurrent.length, 64);
      for (const [i, c] of result.concurrent.entries()) {
        const v = host.files[c.path];
        t.is(c.size, v?.size, `concurrent read #${i} (${c.method} ${c.path}): size`);
        t.is(c.sha256, v?.sha256, `concurrent read #${i} (${c.method} ${c.path}): SHA-256`);
      }
      for (const method of ['readFile', 'readFileDma'] as const) {
        const covered = new Set(result.concurrent.filter((c) => c.method === method).map((c) => c.path));
        t.deepEqual([...covered].sort(), Object.keys(host.files).sort(), `the 64 reads cover every file with ${method}`);
      }
      t.true(result.interrupts > 0);
      t.log(`driver stats: ${JSON.stringify(result.stats)}; ${result.interrupts} interrupts`);
    } finally {
      await cleanup.run();
    }
  });
}
