// The content-addressed build caches under .cache/ (guest images, startup snapshots): a
// cheap fingerprint of an input file for a cache key, and the pruning of outputs an input
// change superseded.

import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, statSync, unlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';

/** Files up to this size are fingerprinted by content; larger ones by size, mtime and inode. */
export const HASH_CONTENT_LIMIT = 8 << 20;

/**
 * A string that changes when the file does: `sha256:<hex>` of the content for files up to
 * HASH_CONTENT_LIMIT; for larger ones (the node binary) `stat:<size>:<mtime>:<inode>:<hex>`,
 * hashing only the first and last MiB. Pass a real path (realpathSync) for a symlink's target.
 * `ignoreMtime`: for the outputs of these caches, which reuseCached() touches at every use
 * (a rebuild still changes the inode and the content).
 */
export function fileFingerprint(path: string, opts: { ignoreMtime?: boolean } = {}): string {
  const st = statSync(path);
  if (st.size <= HASH_CONTENT_LIMIT) return `sha256:${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    h.update(buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)));
    h.update(buf.subarray(0, readSync(fd, buf, 0, buf.length, st.size - buf.length)));
  } finally {
    closeSync(fd);
  }
  return `stat:${st.size}:${opts.ignoreMtime ? '' : st.mtimeMs}:${st.ino}:${h.digest('hex')}`;
}

/** A cache hit: true if `path` exists, after touching it so that pruning keeps it. */
export function reuseCached(path: string): boolean {
  if (!existsSync(path)) return false;
  const now = new Date();
  try {
    utimesSync(path, now, now);
  } catch {
    /* read-only cache: fine */
  }
  return true;
}

/**
 * Deletes `<name>-<16 hex digits>.<ext>` files in `outDir` (and the `.<pid>.<hex>.tmp`
 * leftovers of interrupted builds) not modified for `maxAgeMs`, except `keep`. A cache hit
 * touches its file, so what is in use stays.
 */
export function pruneStale(outDir: string, name: string, ext: string, keep: string, maxAgeMs: number): void {
  const re = new RegExp(`^${escapeRegExp(name)}-[0-9a-f]{16}\\.${escapeRegExp(ext)}(\\.[0-9]+\\.[0-9a-f]+\\.tmp)?$`);
  for (const f of readdirSync(outDir)) {
    const p = join(outDir, f);
    if (p === keep || !re.test(f)) continue;
    try {
      if (Date.now() - statSync(p).mtimeMs > maxAgeMs) unlinkSync(p);
    } catch {
      /* raced with another process: fine */
    }
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
