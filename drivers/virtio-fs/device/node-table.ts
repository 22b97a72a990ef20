// The device's inode table: the node ids it handed out, each with the host path it was
// found at and its lookup count (FUSE: every LOOKUP reply, and every READDIRPLUS entry
// with a non-zero nodeid, adds one; FORGET subtracts nlookup; at zero the id is dead).
// The same host inode (dev, ino) always gets the same node id.
import { FUSE_ROOT_ID } from '../fuse-protocol.js';

export interface FsNode {
  readonly nodeid: number;
  /** Absolute host path; every component below the root was lstat'ed as a real directory. */
  path: string;
  readonly key: string; // "dev:ino"
  nlookup: number;
}

export class NodeTable {
  private readonly byId = new Map<number, FsNode>();
  private readonly byKey = new Map<string, FsNode>();
  private nextId = FUSE_ROOT_ID + 1;
  readonly root: FsNode;

  constructor(rootPath: string, rootKey: string) {
    this.root = { nodeid: FUSE_ROOT_ID, path: rootPath, key: rootKey, nlookup: 1 };
    this.byId.set(FUSE_ROOT_ID, this.root);
    this.byKey.set(rootKey, this.root);
  }

  get(nodeid: number): FsNode | undefined {
    return this.byId.get(nodeid);
  }

  /** Records one more lookup of the inode `key`, found at `path`. */
  lookedUp(key: string, path: string): FsNode {
    let n = this.byKey.get(key);
    if (n === undefined) {
      n = { nodeid: this.nextId++, path, key, nlookup: 0 };
      this.byId.set(n.nodeid, n);
      this.byKey.set(key, n);
    } else if (n !== this.root) {
      n.path = path; // the most recent name it was reached by (hard links, renames)
    }
    n.nlookup++;
    return n;
  }

  /** FORGET: drops `nlookup` lookups; returns false for an unknown node id. */
  forget(nodeid: number, nlookup: number): boolean {
    const n = this.byId.get(nodeid);
    if (n === undefined) return false;
    if (n === this.root) return true; // the root lives as long as the device
    n.nlookup -= nlookup;
    if (n.nlookup <= 0) {
      this.byId.delete(nodeid);
      this.byKey.delete(n.key);
    }
    return true;
  }

  /** Nodes alive, the root included. */
  get size(): number {
    return this.byId.size;
  }

  /** Sum of lookup counts of every node but the root (for tests: 0 after a clean close). */
  get totalLookups(): number {
    let n = 0;
    for (const node of this.byId.values()) if (node !== this.root) n += node.nlookup;
    return n;
  }

  clear(): void {
    for (const id of [...this.byId.keys()]) if (id !== FUSE_ROOT_ID) this.forget(id, Infinity);
  }
}
