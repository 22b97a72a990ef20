// SiteFiles over node:fs/promises: the host-side implementation (tests, the host
// webserver, the guest with the Linux kernel's own virtiofs driver).
import { constants, realpathSync } from 'node:fs';
import { lstat, open, realpath } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import type { SiteEntryKind, SiteFileHandle, SiteFileStat, SiteFiles } from './site-files.js';

export class NodeSiteFiles implements SiteFiles {
  readonly root: string;

  /**
   * `root` is the site's folder. Symbolic links below it are not followed, neither as
   * the last component nor in the middle of a path: such paths show as kind 'other'
   * (the webserver answers 404), so nothing outside `root` is reachable through one.
   */
  constructor(root: string) {
    this.root = realpathSync(resolve(root));
  }

  /** The host path of a site path; throws when it would leave the root. */
  hostPath(path: string): string {
    if (!path.startsWith('/') || path.includes('\0')) throw new Error(`not a site path: ${JSON.stringify(path)}`);
    const full = resolve(this.root, '.' + path);
    if (full !== this.root && !full.startsWith(this.root + sep)) throw new Error(`site path leaves the root: ${JSON.stringify(path)}`);
    return full;
  }

  async stat(path: string): Promise<SiteFileStat | null> {
    try {
      const full = this.hostPath(path);
      const st = await lstat(full);
      let kind: SiteEntryKind = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';
      // A symlinked folder in the middle of the path: the real path differs.
      if (kind !== 'other' && full !== this.root && (await realpath(full)) !== full) kind = 'other';
      return { kind, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG') return null;
      throw err;
    }
  }

  async open(path: string): Promise<SiteFileHandle> {
    // O_NOFOLLOW: a symlink swapped in after stat is not followed either.
    const fh = await open(this.hostPath(path), constants.O_RDONLY | constants.O_NOFOLLOW);
    return {
      async read(into, offset, length, position) {
        const { bytesRead } = await fh.read(into, offset, length, position);
        return bytesRead;
      },
      close: () => fh.close(),
    };
  }
}
