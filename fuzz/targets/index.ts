// Every fuzz target, by name.
import type { FuzzTarget } from '../engine/target.js';
import { daemonConfigTarget } from './daemon-config.js';
import { fuseReplyTarget } from './fuse-reply.js';
import { httpRequestTarget } from './http-request.js';
import { hybridConnectTarget } from './hybrid-connect.js';
import { pciCapsTarget } from './pci-caps.js';
import { vhostUserTarget } from './vhost-user.js';
import { virtqueueTarget } from './virtqueue.js';
import { vsockDeviceTarget } from './vsock-device.js';
import { vsockSiblingsTarget } from './vsock-siblings.js';

export const TARGETS: readonly FuzzTarget[] = [virtqueueTarget, vsockDeviceTarget, vsockSiblingsTarget, vhostUserTarget, hybridConnectTarget, fuseReplyTarget, pciCapsTarget, httpRequestTarget, daemonConfigTarget];

export function findTarget(name: string): FuzzTarget {
  const t = TARGETS.find((x) => x.name === name);
  if (t === undefined) throw new Error(`no fuzz target ${JSON.stringify(name)} (targets: ${TARGETS.map((x) => x.name).join(', ')})`);
  return t;
}
