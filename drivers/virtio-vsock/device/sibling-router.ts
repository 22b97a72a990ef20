// Which guests of one daemon may reach each other (sibling routing). Each device joins
// with its CID and its groups; a guest reaches another guest's CID only when both
// share a group and the other guest's driver runs its queues. A VM with no group
// reaches only the host (vhost-device-vsock puts such VMs in a group "default"; we
// make isolation the default and sharing the operator's choice).
import { VsockError } from './errors.js';

/** What the router needs from a device that joins (the muxer implements it). */
export interface SiblingEndpoint {
  readonly guestCid: number;
  /** The guest's driver runs the rx and tx queues. */
  readonly reachable: boolean;
}

interface Member<E extends SiblingEndpoint> {
  endpoint: E;
  groups: readonly string[];
}

/** A group name: what --vm group= and the config file accept. */
export const GROUP_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export class SiblingRouter<E extends SiblingEndpoint = SiblingEndpoint> {
  private readonly members = new Map<number, Member<E>>();

  /** Adds a device; returns a function that removes it again. */
  join(endpoint: E, groups: readonly string[]): () => void {
    const cid = endpoint.guestCid;
    if (this.members.has(cid)) throw new VsockError('ERR_VSOCK_DUPLICATE_CID', `sibling router: CID ${cid} joined twice`);
    for (const g of groups) {
      if (!GROUP_NAME_RE.test(g)) throw new VsockError('ERR_VSOCK_BAD_GROUP', `sibling router: group name ${JSON.stringify(g)} is not 1-64 of A-Z a-z 0-9 _ . -`);
    }
    const member: Member<E> = { endpoint, groups: [...new Set(groups)] };
    this.members.set(cid, member);
    return () => {
      if (this.members.get(cid) === member) this.members.delete(cid);
    };
  }

  /**
   * The endpoint `from` may reach at CID `to`, or null when `to` is absent, is `from`
   * itself, shares no group with it, or is not running.
   */
  route(from: number, to: number): E | null {
    if (from === to) return null;
    const a = this.members.get(from);
    const b = this.members.get(to);
    if (a === undefined || b === undefined || !b.endpoint.reachable) return null;
    for (const g of a.groups) if (b.groups.includes(g)) return b.endpoint;
    return null;
  }

  /** The groups a CID belongs to (empty when none or absent). */
  groupsOf(cid: number): readonly string[] {
    return this.members.get(cid)?.groups ?? [];
  }
}
