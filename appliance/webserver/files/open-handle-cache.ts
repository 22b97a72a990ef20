// Recently opened file handles, kept for reuse across requests (as nginx's
// open_file_cache): keyed by path, bounded, least recently used out. Over a FUSE file
// system this saves an OPEN before the first READ and a RELEASE after the last one, for
// every request of a file that is not in the webserver's memory cache.
//
// A handle is shared: every acquire() takes a reference, and the user gives it back
// with unref() once its reads have settled (reads take a position, so users do not
// disturb each other). A handle leaves the cache when it is evicted, found stale
// (isCurrent false: the key names something else now) or the cache is closed; it is
// released (RELEASE) then, or when its last user is done if it is still in use - once,
// and never under a read in flight.
//
// Validity is the source's business (isCurrent); this module keeps no time of its own.

export interface OpenHandleSource<H> {
  /** Opens what `key` names. */
  open(key: string): Promise<H>;
  /**
   * Whether `handle` (from open(key)) still is what `key` names. Synchronous when it
   * can tell at once; a rejection counts as false.
   */
  isCurrent(key: string, handle: H): boolean | Promise<boolean>;
  /** Closes a handle for good. A rejection is counted, nothing more. */
  release(handle: H): Promise<void>;
}

export interface OpenHandleCacheStats {
  /** acquire()s answered by a handle already open, or being opened (no open()). */
  hits: number;
  /** acquire()s that called open(). */
  misses: number;
  /** Handles dropped because their key named something else (isCurrent false). */
  staleDrops: number;
  /** Handles dropped as least recently used. */
  evictions: number;
  /** Handles open: cached, or dropped and still in use. */
  openHandles: number;
  /** Handles in the cache (being opened included). */
  cached: number;
  /** release() calls that rejected. */
  releaseErrors: number;
}

/** One cached handle; acquire() hands it out, unref() gives it back. */
export interface HandleLease<H> {
  readonly handle: H;
}

interface Entry<H> extends HandleLease<H> {
  readonly key: string;
  handle: H;
  /** The open() in progress; null once it settled. */
  opening: Promise<H> | null;
  /** Users between acquire() and unref() (the opener included while opening). */
  refs: number;
  /** In the map and the use order. */
  cached: boolean;
  released: boolean;
  /** Neighbours in the use order (older, newer), while cached. */
  prev: Entry<H> | null;
  next: Entry<H> | null;
}

export class OpenHandleCache<H> {
  private readonly map = new Map<string, Entry<H>>();
  /** Least and most recently used (a list: a hit moves one entry, nothing else). */
  private oldest: Entry<H> | null = null;
  private newest: Entry<H> | null = null;
  private closed = false;
  private readonly counters = { hits: 0, misses: 0, staleDrops: 0, evictions: 0, openHandles: 0, releaseErrors: 0 };

  constructor(
    private readonly source: OpenHandleSource<H>,
    /** Handles kept (at least 1; a caller wanting none does without this cache). */
    readonly capacity: number,
  ) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`open handle cache capacity ${capacity}`);
  }

  get stats(): OpenHandleCacheStats {
    return { ...this.counters, cached: this.map.size };
  }

  /**
   * A handle for `key`: the cached one while it is current, else a new one (shared
   * with concurrent callers). Give it back with unref() exactly once.
   */
  async acquire(key: string): Promise<HandleLease<H>> {
    let e = this.map.get(key);
    if (e !== undefined && e.opening === null) {
      e.refs++;
      let ok: boolean;
      try {
        const v = this.source.isCurrent(key, e.handle);
        ok = typeof v === 'boolean' ? v : await v;
      } catch {
        ok = false;
      }
      if (ok) {
        if (e.cached) this.touch(e);
        this.counters.hits++;
        return e;
      }
      if (e.cached) {
        this.counters.staleDrops++;
        this.drop(e);
      }
      this.unref(e);
      // Whatever is cached for the key now was opened after the check above began: as
      // fresh as a new open, so it is used without another check (no loop).
      e = this.map.get(key);
      if (e !== undefined && e.opening === null) {
        e.refs++;
        this.touch(e);
        this.counters.hits++;
        return e;
      }
    }
    if (e !== undefined) {
      // Being opened: share that open.
      e.refs++;
      this.touch(e);
      this.counters.hits++;
      try {
        await e.opening;
      } catch (err) {
        e.refs--;
        throw err;
      }
      return e;
    }
    return this.openNew(key);
  }

  /** Gives back a lease from acquire(); the handle is released here if it left the cache. */
  unref(lease: HandleLease<H>): void {
    const e = lease as Entry<H>;
    if (--e.refs === 0 && !e.cached && e.opening === null) void this.release(e);
  }

  /** Drops every cached handle and releases those not in use (the others when their users are done). */
  async close(): Promise<void> {
    this.closed = true;
    const releases: Promise<void>[] = [];
    for (let e = this.oldest; e !== null; ) {
      const next = e.next;
      const r = this.drop(e);
      if (r !== null) releases.push(r);
      e = next;
    }
    await Promise.all(releases);
  }

  private async openNew(key: string): Promise<HandleLease<H>> {
    const opening = this.source.open(key);
    const e: Entry<H> = { key, handle: null as unknown as H, opening, refs: 1, cached: false, released: false, prev: null, next: null };
    this.counters.misses++;
    // After close(), handles are still opened for whoever asks, just not kept.
    if (!this.closed) this.insert(e);
    try {
      e.handle = await opening;
    } catch (err) {
      e.refs--; // callers sharing this open give theirs back as they see the error
      e.released = true; // nothing to release
      if (e.cached) this.unlinkFromCache(e);
      throw err;
    } finally {
      e.opening = null;
    }
    this.counters.openHandles++;
    return e;
  }

  /** Takes `e` out of the cache; releases it now when nobody uses it (the release's promise), else null. */
  private drop(e: Entry<H>): Promise<void> | null {
    if (!e.cached) return null;
    this.unlinkFromCache(e);
    return e.refs === 0 && e.opening === null ? this.release(e) : null;
  }

  private async release(e: Entry<H>): Promise<void> {
    if (e.released) return;
    e.released = true;
    this.counters.openHandles--;
    try {
      await this.source.release(e.handle);
    } catch {
      this.counters.releaseErrors++; // the handle is gone either way; serving goes on
    }
  }

  private insert(e: Entry<H>): void {
    const old = this.map.get(e.key);
    if (old !== undefined) void this.drop(old); // not expected (acquire opens only when none is cached)
    this.map.set(e.key, e);
    e.cached = true;
    this.append(e);
    while (this.map.size > this.capacity && this.oldest !== null && this.oldest !== e) {
      this.counters.evictions++;
      void this.drop(this.oldest);
    }
  }

  private unlinkFromCache(e: Entry<H>): void {
    if (this.map.get(e.key) === e) this.map.delete(e.key);
    this.unlink(e);
    e.cached = false;
  }

  private touch(e: Entry<H>): void {
    if (!e.cached || e === this.newest) return;
    this.unlink(e);
    this.append(e);
  }

  private append(e: Entry<H>): void {
    e.prev = this.newest;
    e.next = null;
    if (this.newest !== null) this.newest.next = e;
    else this.oldest = e;
    this.newest = e;
  }

  private unlink(e: Entry<H>): void {
    if (e.prev !== null) e.prev.next = e.next;
    else if (this.oldest === e) this.oldest = e.next;
    if (e.next !== null) e.next.prev = e.prev;
    else if (this.newest === e) this.newest = e.prev;
    e.prev = e.next = null;
  }
}
