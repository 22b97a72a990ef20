// The driver's lookup cache: normalized path ('/a/b') -> node id and attributes, bounded,
// least recently used first out. The use order is a list through the entries: a hit
// moves one entry (deleting and re-inserting a Map key, the Map's own order, costs time
// growing with the Map's size in V8). Every LOOKUP reply the driver accepted counts one
// lookup on the device (FUSE's nlookup); an entry remembers how many it holds, and when
// it leaves the cache (evicted, replaced by a different node id, cleared on close) the
// eviction callback sends FORGET for exactly that many, so the device can drop the inode.
import type { FuseAttr, FuseEntryOut } from '../fuse-codec.js';
import type { FsStats } from './stats.js';

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
  linkTarget: string | undefined;
  /** FsStats built from `statsAttr` (an earlier `attr` object): reused while attr is that object. */
  stats: FsStats | null;
  statsAttr: FuseAttr | null;
  /** Operations using the node id right now: a pinned entry is never evicted. */
  pins: number;
  /** Neighbours in the use order, while in the cache (older, newer). */
  prev: CachedInode | null;
  next: CachedInode | null;
}

export type ForgetCallback = (nodeid: number, nlookup: number) => void;

/** A new entry, every field present (one object shape for all entries). */
export function newEntry(path: string, nodeid: number, attr: FuseAttr): CachedInode {
  return { path, nodeid, attr, nlookup: 0, entryExpires: 0, attrExpires: 0, linkTarget: undefined, stats: null, statsAttr: null, pins: 0, prev: null, next: null };
}

const validUntil = (now: number, sec: number, nsec: number): number => now + sec * 1000 + nsec / 1e6;

export class InodeCache {
  private readonly map = new Map<string, CachedInode>();
  /** Least and most recently used entries. */
  private oldest: CachedInode | null = null;
  private newest: CachedInode | null = null;
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
    if (e !== undefined) this.touch(e);
    return e;
  }

  /** The entry for `path`, not marked used. */
  peek(path: string): CachedInode | undefined {
    return this.map.get(path);
  }

  /** Marks an entry of the cache (from get or peek) as the most recently used. */
  touch(c: CachedInode): void {
    if (c === this.newest) return;
    this.unlink(c);
    this.append(c);
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
      this.remove(c);
      this.retire(c);
      c = undefined;
    }
    if (c === undefined) {
      c = newEntry(path, e.nodeid, e.attr);
      this.map.set(path, c);
      this.append(c);
    } else {
      this.touch(c);
      // Assigned, not deleted: `delete` would turn the entry into a slow dictionary object.
      if (c.attr.mtime !== e.attr.mtime || c.attr.mtimensec !== e.attr.mtimensec || c.attr.size !== e.attr.size) c.linkTarget = undefined;
    }
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

  private append(c: CachedInode): void {
    c.prev = this.newest;
    c.next = null;
    if (this.newest !== null) this.newest.next = c;
    else this.oldest = c;
    this.newest = c;
  }

  private unlink(c: CachedInode): void {
    if (c.prev !== null) c.prev.next = c.next;
    else this.oldest = c.next;
    if (c.next !== null) c.next.prev = c.prev;
    else this.newest = c.prev;
    c.prev = c.next = null;
  }

  private remove(c: CachedInode): void {
    this.map.delete(c.path);
    this.unlink(c);
  }

  /** Evicts least recently used unpinned entries while over capacity. */
  private trim(): void {
    for (let c = this.oldest; c !== null && this.map.size > this.capacity; ) {
      const next = c.next;
      if (c.pins === 0) {
        this.remove(c);
        this.evictions++;
        this.retire(c);
      }
      c = next;
    }
  }

  /** Drops every entry, forgetting each (pinned ones when their last user is done). */
  clear(): void {
    const all = [...this.map.values()];
    this.map.clear();
    for (const c of all) c.prev = c.next = null;
    this.oldest = this.newest = null;
    for (const c of all) this.retire(c);
  }
}
