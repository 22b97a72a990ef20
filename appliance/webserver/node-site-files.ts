// SiteFiles over node:fs/promises: the host-side implementation (tests, the host
// webserver, the guest with the Linux kernel's own virtiofs driver).
import { lstat, open } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import type { SiteFileHandle, SiteFileStat, SiteFiles } from './site-files.js';

export class NodeSiteFiles implements SiteFiles {
  readonly root: string;

  /**
   * `root` is the site's folder. Symbolic links are not followed (they show as kind
   * 'other', which the webserver answers with 404), so nothing outside `root` is
   * reachable through one.
   */
  constructor(root: string) {
    this.root = resolve(root);
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
      const st = await lstat(this.hostPath(path));
      const kind = st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other';
      return { kind, size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ENAMETOOLONG') return null;
      throw err;
    }
  }

  async open(path: string): Promise<SiteFileHandle> {
    const fh = await open(this.hostPath(path), 'r');
    return {
      async read(into, offset, length, position) {
        const { bytesRead } = await fh.read(into, offset, length, position);
        return bytesRead;
      },
      close: () => fh.close(),
    };
  }
}
