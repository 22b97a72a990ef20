// The virtio structure capabilities (virtio 1.2, 4.1.4 "Virtio Structure PCI
// Capabilities"): vendor-specific PCI capabilities (id 0x09), each naming a BAR, an
// offset and a length where one register block lives.
//
//   struct virtio_pci_cap {
//     u8 cap_vndr;    0x09
//     u8 cap_next;
//     u8 cap_len;     at least 16
//     u8 cfg_type;    which structure (below)
//     u8 bar;         0..5
//     u8 id;          multiple capabilities of one type
//     u8 padding[2];
//     le32 offset;    within the BAR
//     le32 length;    bytes
//   };
//   struct virtio_pci_notify_cap { struct virtio_pci_cap cap; le32 notify_off_multiplier; };
import { PCI_CAP_ID_VNDR, type PciCapability } from '../pci/capabilities.js';
import { PciError } from '../pci/errors.js';

export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;

/** Virtio PCI vendor id and the modern device id range (4.1.2.1: 0x1040 + virtio device id). */
export const VIRTIO_PCI_VENDOR = 0x1af4;
export const VIRTIO_PCI_MODERN_DEVICE_BASE = 0x1040;

export interface VirtioPciRegion {
  bar: number;
  offset: number;
  length: number;
}

/** Where the register blocks of a modern virtio PCI device are. */
export interface VirtioPciLayout {
  common: VirtioPciRegion;
  notify: VirtioPciRegion & { multiplier: number };
  isr: VirtioPciRegion;
  /** Absent for devices without configuration space. */
  device: VirtioPciRegion | null;
}

/** Minimum block sizes the driver relies on. */
const COMMON_CFG_MIN = 0x38; // up to and including queue_device (4.1.4.3)

/**
 * Reads the virtio capabilities from a config-space snapshot. Per 4.1.4.1 the driver
 * uses the first capability of each type whose BAR is valid and ignores types it does
 * not know. Throws when a required block is missing or malformed.
 */
export function parseVirtioCaps(config: Uint8Array, caps: readonly PciCapability[]): VirtioPciLayout {
  const dv = new DataView(config.buffer, config.byteOffset, config.byteLength);
  const found = new Map<number, VirtioPciRegion & { multiplier: number }>();
  for (const c of caps) {
    if (c.id !== PCI_CAP_ID_VNDR) continue;
    const o = c.offset;
    const capLen = config[o + 2]!;
    if (capLen < 16 || o + capLen > config.length) {
      throw new PciError('ERR_PCI_CAPABILITY', `virtio capability at 0x${o.toString(16)} has length ${capLen} (need at least 16, inside config space)`);
    }
    const type = config[o + 3]!;
    const bar = config[o + 4]!;
    if (bar > 5) continue; // 4.1.4.1: reserved BAR values are ignored
    if (found.has(type)) continue; // first of each type wins
    const region = { bar, offset: dv.getUint32(o + 8, true), length: dv.getUint32(o + 12, true), multiplier: 0 };
    if (type === VIRTIO_PCI_CAP_NOTIFY_CFG) {
      if (capLen < 20) throw new PciError('ERR_PCI_CAPABILITY', `virtio notify capability at 0x${o.toString(16)} is ${capLen} bytes, needs 20`);
      region.multiplier = dv.getUint32(o + 16, true);
    }
    found.set(type, region);
  }
  const need = (type: number, name: string): VirtioPciRegion & { multiplier: number } => {
    const r = found.get(type);
    if (r === undefined) throw new PciError('ERR_PCI_CAPABILITY', `no virtio ${name} capability: not a modern (virtio 1.x) PCI device?`);
    return r;
  };
  const common = need(VIRTIO_PCI_CAP_COMMON_CFG, 'common configuration');
  const notify = need(VIRTIO_PCI_CAP_NOTIFY_CFG, 'notification');
  const isr = need(VIRTIO_PCI_CAP_ISR_CFG, 'ISR');
  const device = found.get(VIRTIO_PCI_CAP_DEVICE_CFG) ?? null;
  if (common.length < COMMON_CFG_MIN) throw new PciError('ERR_PCI_CAPABILITY', `common configuration block is ${common.length} bytes, needs ${COMMON_CFG_MIN}`);
  if (isr.length < 1) throw new PciError('ERR_PCI_CAPABILITY', 'ISR block is empty');
  // 4.1.4.4: the offset is 2-byte aligned and the multiplier even (or 0: one doorbell).
  if (notify.offset % 2 !== 0 || notify.multiplier % 2 !== 0) {
    throw new PciError('ERR_PCI_CAPABILITY', `notify block offset ${notify.offset} / multiplier ${notify.multiplier} are not even`);
  }
  const strip = ({ bar, offset, length }: VirtioPciRegion): VirtioPciRegion => ({ bar, offset, length });
  return { common: strip(common), notify: { ...strip(notify), multiplier: notify.multiplier }, isr: strip(isr), device: device && strip(device) };
}
