// The ICU data of the guest's node. Node links the full ICU data (33 MB for ICU 78: every
// locale, every converter) into its binary as `icudt<NN>_dat`; most of the microvm
// image was that. With `icu: 'en'` (the default on microvm) the image gets:
//
//   /usr/bin/node                      the host's node, stripped, its linked package
//                                      emptied in place (icu-package.ts), nothing else changed;
//   /usr/share/icu/icudt<NN>l.dat      the package trimmed to root + en + en_US +
//                                      en_US_POSIX in every locale tree, with every item
//                                      that is not locale data except converter tables
//                                      (TextDecoder: UTF-8, UTF-16, latin1 only),
//                                      transliteration, the CJK/Thai dictionaries, and
//                                      new res_index.res bundles listing the locales kept
//                                      (so Intl.supportedLocalesOf reports only those);
//
// and the init script sets NODE_ICU_DATA=/usr/share/icu (ICU looks up an item in the
// linked package, now empty, then in that folder's package). What node's own small-icu
// builds shipped for years. That node also has its unwind tables zeroed (1.7 MB of the
// image; elf-sections.ts says what that costs: native backtraces of a crash).
// `icu: 'full'` leaves node as it is.
//
// When the symbol or the package header is not as expected (another node build), the
// image keeps node as it is and the build's progress output says why. The results are
// cached under .cache/icu/<key>/ (node, icudt<NN>l.dat), the key a hash of the node
// binary's fingerprint, the locales, genrb's version and this builder's version.

import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileFingerprint, reuseCached } from './cache-files.js';
import { ImageBuildError, cacheDir, run } from './debian.js';
import { UNWIND_SECTIONS, zeroSections } from './elf-sections.js';
import { emptyPackageInPlace, findEmbeddedIcu, type IcuItem, parsePackage, resIndexSource, trimItems, writePackage } from './icu-package.js';

/** `en`: English-only ICU data in a file beside an emptied node (default on microvm); `full`: node as it is. */
export type IcuData = 'en' | 'full';
export const ICU_DATA_CHOICES: readonly IcuData[] = ['en', 'full'];

/** The locales the `en` data keeps (root is always kept). */
export const EN_LOCALES: readonly string[] = ['en', 'en_US', 'en_US_POSIX'];

/** Where the trimmed package goes in the guest (NODE_ICU_DATA). */
export const GUEST_ICU_DIR = '/usr/share/icu';

/** Bump when what this file produces changes. */
const BUILDER_VERSION = 5;

const GENRB_HINT = 'genrb is in icu-devtools: npm run setup, or apt-get install -y icu-devtools';

export interface IcuDataResult {
  /** The node binary for the image. */
  node: string;
  /** Whether the image builder still has to strip `node` (false: already stripped). */
  strip: boolean;
  /** The package file for GUEST_ICU_DIR, when node's linked data was emptied. */
  dataFile?: { host: string; guest: string };
  /** Environment lines for the init script (NODE_ICU_DATA). */
  env: Record<string, string>;
  /** What was done, for progress output ("ICU data: en only (...)", or why node is left as it is). */
  note: string;
}

/** Throws ERR_SPEC for anything but `en` or `full`. */
export function checkIcuChoice(icu: unknown, where: string): IcuData {
  if (typeof icu === 'string' && (ICU_DATA_CHOICES as readonly string[]).includes(icu)) return icu as IcuData;
  throw new ImageBuildError('ERR_SPEC', `${where}: ICU data ${JSON.stringify(icu)}: expected ${ICU_DATA_CHOICES.join(' or ')}`);
}

/**
 * The node binary and ICU files for an image. `full` (or a node whose linked data is not
 * found or not valid) gives node itself; the reason is in `note`.
 */
export async function prepareIcuData(opts: { node: string; icu: IcuData; progress?: (line: string) => void }): Promise<IcuDataResult> {
  const progress = opts.progress ?? (() => {});
  const node = realpathSync(opts.node);
  const asIs = (note: string): IcuDataResult => ({ node, strip: true, env: {}, note });
  if (opts.icu === 'full') return asIs('ICU data: full (node as it is)');

  const genrb = genrbVersion();
  if (genrb === null) {
    const note = `ICU data: full, node left as it is: genrb not found (${GENRB_HINT})`;
    progress(note);
    return asIs(note);
  }
  const key = createHash('sha256')
    .update(`tsvirtio-icu v${BUILDER_VERSION}\n${fileFingerprint(node)}\n${EN_LOCALES.join(',')}\n${genrb}\n`)
    .digest('hex')
    .slice(0, 16);
  const outDir = join(cacheDir('icu'), key);
  const done = join(outDir, 'result.json');
  if (reuseCached(done)) return readResult(outDir, done);

  const binary = readFileSync(node);
  let embedded;
  try {
    embedded = findEmbeddedIcu(binary, node);
    emptyPackageInPlace(Buffer.from(binary.subarray(embedded.offset, embedded.offset + embedded.size)), 0, embedded.size, `${embedded.symbol} in ${node}`);
  } catch (e) {
    if (!(e instanceof ImageBuildError)) throw e;
    const note = `ICU data: full, node left as it is (${e.code}: ${e.message})`;
    progress(note);
    return asIs(note);
  }
  progress(`ICU data: building the English-only package from ${embedded.symbol} of ${node} (once)`);
  const what = `${embedded.symbol} in ${node}`;
  const pkg = parsePackage(binary.subarray(embedded.offset, embedded.offset + embedded.size), what);
  const trimmed = trimItems(pkg.items, EN_LOCALES);

  const tmp = `${outDir}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    mkdirSync(tmp, { recursive: true });
    const indexes = await resIndexes(trimmed.locales, tmp);
    const data = writePackage({ ...pkg, items: [...trimmed.items, ...indexes] });
    const datName = `${pkg.packageName}.dat`;
    writeFileSync(join(tmp, datName), data);

    // The image's node: stripped first (strip rewrites the file), then its package emptied.
    const stripped = join(tmp, 'node');
    await run('strip', ['-o', stripped, node], { hint: 'strip is in binutils' });
    const exe = readFileSync(stripped);
    const at = findEmbeddedIcu(exe, `${stripped} (stripped ${node})`);
    emptyPackageInPlace(exe, at.offset, at.size, `${at.symbol} in the stripped ${node}`);
    // And its unwind tables (elf-sections.ts: only native crash backtraces read them).
    const unwind = zeroSections(exe, UNWIND_SECTIONS, `the stripped ${node}`);
    writeFileSync(stripped, exe, { mode: 0o755 });

    const result: StoredResult = {
      dataName: datName,
      note: `ICU data: en only (${trimmed.items.length + indexes.length} of ${pkg.items.length} items, ${(data.length / 1e6).toFixed(1)} of ${(embedded.size / 1e6).toFixed(1)} MB; full data: --icu full); node's unwind tables dropped (${(unwind.reduce((n, u) => n + u.size, 0) / 1e6).toFixed(1)} MB)`,
    };
    for (const f of readdirSync(tmp)) if (f.endsWith('.txt') || f.endsWith('.res')) rmSync(join(tmp, f), { recursive: true, force: true });
    writeFileSync(join(tmp, 'result.json'), JSON.stringify(result, null, 2) + '\n');
    rmSync(outDir, { recursive: true, force: true });
    renameSync(tmp, outDir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  pruneOtherKeys(cacheDir('icu'), key);
  const out = readResult(outDir, done);
  progress(out.note);
  return out;
}

/** Stale results of other keys (another node binary, an older builder: 90 MB each) unused for this long are deleted. */
const PRUNE_AGE_MS = 30 * 60 * 1000;

function pruneOtherKeys(dir: string, keep: string): void {
  for (const name of readdirSync(dir)) {
    if (name === keep || !/^[0-9a-f]{16}(\.\d+\.[0-9a-f]+\.tmp)?$/.test(name)) continue;
    try {
      const marker = join(dir, name, 'result.json');
      const mtime = statSync(existsSync(marker) ? marker : join(dir, name)).mtimeMs;
      if (Date.now() - mtime > PRUNE_AGE_MS) rmSync(join(dir, name), { recursive: true, force: true });
    } catch {
      /* raced with another process: fine */
    }
  }
}

interface StoredResult {
  dataName: string;
  note: string;
}

function readResult(outDir: string, file: string): IcuDataResult {
  const r = JSON.parse(readFileSync(file, 'utf8')) as StoredResult;
  return {
    node: join(outDir, 'node'),
    strip: false,
    dataFile: { host: join(outDir, r.dataName), guest: `${GUEST_ICU_DIR}/${r.dataName}` },
    env: { NODE_ICU_DATA: GUEST_ICU_DIR },
    note: r.note,
  };
}

/** `genrb version 56 (ICU version 72.1).`, or null when genrb is not installed (`genrb -V` exits 1). */
function genrbVersion(): string | null {
  const r = spawnSync('genrb', ['-V'], { encoding: 'utf8' });
  if (r.error) return null;
  return /genrb version[^\n]*/.exec(`${r.stdout}${r.stderr}`)?.[0] ?? 'genrb (version unknown)';
}

/** New res_index.res items, one per locale tree, compiled with genrb in `work`. */
async function resIndexes(perTree: ReadonlyMap<string, string[]>, work: string): Promise<IcuItem[]> {
  const out: IcuItem[] = [];
  for (const [tree, locales] of perTree) {
    const dir = join(work, 'res', tree || '_top');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'res_index.txt'), resIndexSource(locales));
    await run('genrb', ['-q', '-e', 'UTF-8', '-s', dir, '-d', dir, 'res_index.txt'], { hint: GENRB_HINT });
    const res = join(dir, 'res_index.res');
    if (!existsSync(res)) throw new ImageBuildError('ERR_ICU_GENRB', `genrb wrote no ${res}`);
    out.push({ name: tree ? `${tree}/res_index.res` : 'res_index.res', data: readFileSync(res) });
  }
  rmSync(join(work, 'res'), { recursive: true, force: true });
  return out;
}
