// The driver's lookup cache: normalized path -> node id and attributes, bounded, least
// recently used first out. Every LOOKUP reply the driver accepted counts one lookup on
// the device (FUSE's nlookup); an entry remembers how many it holds, and when it leaves
// the cache (evicted, replaced by a different node id, cleared on close) the eviction
// callback sends FORGET for exactly that many, so the device can drop the inode.
import type { FuseAttr, FuseEntryOut } from '../fuse-codec.js';

export interface CachedInode {
  readonly path: string;
  nodeid: number;
  attr: FuseAttr;
  /** Lookups the device counted for this entry (to be forgotten). */
  nlookup: number;
  /** performance.now() deadlines from entry_valid and attr_valid. */
  entryExpires: number;
  attrExpires: number;
  /** A symbolic link's target, once read. */
  linkTarget?: string;
  /** Operations using the node id right now: a pinned entry is never evicted. */
  pins: number;
}

export type ForgetCallback = (nodeid: number, nlookup: number) => void;

const validUntil = (now: number, sec: number, nsec: number): number => now + sec * 1000 + nsec / 1e6;

export class InodeCache {
  private readonly map = new Map<string, CachedInode>();
  evictions = 0;

  constructor(
    readonly capacity: number,
    private readonly onForget: ForgetCallback,
  ) {
    if (capacity < 1) throw new RangeError(`inode cache capacity ${capacity}`);
  }

  get size(): number {
    return this.map.size;
  }

  /** The entry for `path` (even when expired: the caller checks), marked recently used. */
  get(path: string): CachedInode | undefined {
    const e = this.map.get(path);
    if (e !== undefined) {
      this.map.delete(path);
      this.map.set(path, e);
    }
    return e;
  }

  /**
   * Records one accepted LOOKUP reply (nodeid != 0) for `path`, pinned `pins` times
   * for the callers waiting on it (so it cannot be evicted before they use it).
   */
  addLookup(path: string, e: FuseEntryOut, now: number, pins = 0): CachedInode {
    let c = this.map.get(path);
    if (c !== undefined && c.nodeid !== e.nodeid) {
      // The name now leads to another inode: the old one's lookups go back (at once,
      // or when its last user unpins it).
      this.map.delete(path);
      this.retire(c);
      c = undefined;
    }
    if (c === undefined) {
      c = { path, nodeid: e.nodeid, attr: e.attr, nlookup: 0, entryExpires: 0, attrExpires: 0, pins: 0 };
    } else {
      this.map.delete(path);
      if (c.attr.mtime !== e.attr.mtime || c.attr.mtimensec !== e.attr.mtimensec || c.attr.size !== e.attr.size) delete c.linkTarget;
    }
    this.map.set(path, c);
    c.nlookup++;
    c.attr = e.attr;
    c.entryExpires = validUntil(now, e.entryValid, e.entryValidNsec);
    c.attrExpires = validUntil(now, e.attrValid, e.attrValidNsec);
    c.pins += pins;
    this.trim();
    return c;
  }

  /** Fresh attributes from GETATTR. */
  setAttr(c: CachedInode, attr: FuseAttr, validSec: number, validNsec: number, now: number): void {
    c.attr = attr;
    c.attrExpires = validUntil(now, validSec, validNsec);
  }

  pin(c: CachedInode): CachedInode {
    c.pins++;
    return c;
  }

  unpin(c: CachedInode): void {
    if (--c.pins > 0) return;
    if (this.retired.delete(c)) this.onForget(c.nodeid, c.nlookup);
    else this.trim();
  }

  private readonly retired = new Set<CachedInode>();

  private retire(c: CachedInode): void {
    if (c.nlookup === 0) return; // the root entry, or never counted
    if (c.pins > 0) this.retired.add(c);
    else this.onForget(c.nodeid, c.nlookup);
  }

  /** Evicts least recently used unpinned entries while over capacity. */
  private trim(): void {
    if (this.map.size <= this.capacity) return;
    for (const [path, c] of this.map) {
      if (this.map.size <= this.capacity) break;
      if (c.pins > 0) continue;
      this.map.delete(path);
      this.evictions++;
      this.retire(c);
    }
  }

  /** Drops every entry, forgetting each (pinned ones when their last user is done). */
  clear(): void {
    const all = [...this.map.values()];
    this.map.clear();
    for (const c of all) this.retire(c);
  }
}
