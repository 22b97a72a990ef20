// The PCI capability list (PCI Local Bus 3.0, 6.7): when bit 4 of the status register
// (config offset 0x06) is set, the byte at 0x34 points to the first capability; each
// capability starts with its id and the offset of the next one (0 ends the list).
// The list lives in the device-dependent region 0x40..0xff; pointers have their two low
// bits reserved (masked off).
import { PciError } from './errors.js';

export const PCI_STATUS = 0x06;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_CAPABILITY_LIST = 0x34;
/** Vendor-specific capability: virtio puts its structure descriptions here (virtio 1.2, 4.1.4). */
export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_MSIX = 0x11;

/** A capability: its id and where it starts in config space. */
export interface PciCapability {
  id: number;
  /** Offset of the capability's first byte (the id) in config space. */
  offset: number;
}

/** The standard header is 64 bytes; capabilities sit in the next 192. */
const CAP_REGION_START = 0x40;
const CONFIG_SPACE_SIZE = 256;
/** At most (256 - 64) / 4 capabilities fit: more means the list loops. */
const MAX_CAPS = (CONFIG_SPACE_SIZE - CAP_REGION_START) / 4;

/**
 * Walks the capability list of a config-space snapshot (at least 256 bytes). Rejects
 * pointers outside 0x40..0xfc and lists that loop.
 */
export function walkCapabilities(config: Uint8Array): PciCapability[] {
  if (config.length < CONFIG_SPACE_SIZE) {
    throw new PciError('ERR_PCI_CONFIG', `config space snapshot has ${config.length} bytes; capabilities need all 256 (are you root?)`);
  }
  const status = config[PCI_STATUS]! | (config[PCI_STATUS + 1]! << 8);
  if ((status & PCI_STATUS_CAP_LIST) === 0) return [];
  const caps: PciCapability[] = [];
  const seen = new Set<number>();
  let ptr = config[PCI_CAPABILITY_LIST]! & 0xfc;
  while (ptr !== 0) {
    if (ptr < CAP_REGION_START || ptr > CONFIG_SPACE_SIZE - 4) {
      throw new PciError('ERR_PCI_CAPABILITY', `capability pointer 0x${ptr.toString(16)} is outside 0x40..0xfc`);
    }
    if (seen.has(ptr) || caps.length >= MAX_CAPS) {
      throw new PciError('ERR_PCI_CAPABILITY', `capability list loops (pointer 0x${ptr.toString(16)} seen twice)`);
    }
    seen.add(ptr);
    caps.push({ id: config[ptr]!, offset: ptr });
    ptr = config[ptr + 1]! & 0xfc;
  }
  return caps;
}
