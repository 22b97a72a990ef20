// The common configuration structure of a modern virtio PCI device (virtio 1.2,
// 4.1.4.3), read and written through a mapped BAR.
//
// Register access: every access must have exactly the width of the field (4.1.3.1:
// QEMU's common-cfg handler answers only full-field reads at the field's offset). A
// typed-array element access is one load or store of the element's width, in the
// interpreter and in optimized code alike; DataView is NOT used, because V8's generic
// DataView builtins assemble multi-byte values from single-byte loads. Atomics are not
// used either: on x86 V8 compiles a seq-cst store to XCHG, a read-modify-write that
// QEMU then emulates on MMIO as a read followed by a write. The 64-bit queue addresses
// are written as two 32-bit halves, low half first (4.1.3.1 allows it).
import { PciError } from '../pci/errors.js';
import type { VirtioPciRegion } from './pci-virtio-caps.js';

/** Byte offsets in struct virtio_pci_common_cfg. */
export const COMMON_DEVICE_FEATURE_SELECT = 0x00; // le32
export const COMMON_DEVICE_FEATURE = 0x04; // le32, read-only
export const COMMON_DRIVER_FEATURE_SELECT = 0x08; // le32
export const COMMON_DRIVER_FEATURE = 0x0c; // le32
export const COMMON_MSIX_CONFIG = 0x10; // le16
export const COMMON_NUM_QUEUES = 0x12; // le16, read-only
export const COMMON_DEVICE_STATUS = 0x14; // u8
export const COMMON_CONFIG_GENERATION = 0x15; // u8, read-only
export const COMMON_QUEUE_SELECT = 0x16; // le16
export const COMMON_QUEUE_SIZE = 0x18; // le16
export const COMMON_QUEUE_MSIX_VECTOR = 0x1a; // le16
export const COMMON_QUEUE_ENABLE = 0x1c; // le16
export const COMMON_QUEUE_NOTIFY_OFF = 0x1e; // le16, read-only
export const COMMON_QUEUE_DESC = 0x20; // le64
export const COMMON_QUEUE_DRIVER = 0x28; // le64
export const COMMON_QUEUE_DEVICE = 0x30; // le64

/** "No MSI-X vector" (4.1.4.3): INTx and the ISR are used instead. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** Exact-width views over one mapped BAR (shared by every block that lives in it). */
export class BarViews {
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  constructor(readonly buffer: ArrayBuffer) {
    this.u8 = new Uint8Array(buffer);
    this.u16 = new Uint16Array(buffer, 0, buffer.byteLength >>> 1);
    this.u32 = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
  }
}

/** Checks a register block fits its BAR and is aligned for the widest access made to it. */
export function checkRegion(region: VirtioPciRegion, barSize: number, align: number, what: string): void {
  if (region.offset % align !== 0) throw new PciError('ERR_PCI_CAPABILITY', `${what} block at BAR${region.bar}+0x${region.offset.toString(16)} is not ${align}-byte aligned`);
  if (region.offset + region.length > barSize) {
    throw new PciError('ERR_PCI_CAPABILITY', `${what} block BAR${region.bar}+0x${region.offset.toString(16)} (+${region.length}) runs past the ${barSize}-byte BAR`);
  }
}

export class CommonCfg {
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private readonly base: number;

  constructor(views: BarViews, region: VirtioPciRegion) {
    checkRegion(region, views.buffer.byteLength, 4, 'common configuration');
    this.u8 = views.u8;
    this.u16 = views.u16;
    this.u32 = views.u32;
    this.base = region.offset;
  }

  read8(reg: number): number {
    return this.u8[this.base + reg]!;
  }
  write8(reg: number, v: number): void {
    this.u8[this.base + reg] = v;
  }
  read16(reg: number): number {
    return this.u16[(this.base + reg) >>> 1]!;
  }
  write16(reg: number, v: number): void {
    this.u16[(this.base + reg) >>> 1] = v;
  }
  read32(reg: number): number {
    return this.u32[(this.base + reg) >>> 2]!;
  }
  write32(reg: number, v: number): void {
    this.u32[(this.base + reg) >>> 2] = v;
  }
  /** A 64-bit field as two 32-bit writes, low half first. */
  write64(reg: number, v: number): void {
    this.write32(reg, v >>> 0);
    this.write32(reg + 4, Math.floor(v / 0x100000000) >>> 0);
  }

  /** All 64 device feature bits (two 32-bit windows selected by device_feature_select). */
  deviceFeatures(): bigint {
    this.write32(COMMON_DEVICE_FEATURE_SELECT, 0);
    const lo = this.read32(COMMON_DEVICE_FEATURE);
    this.write32(COMMON_DEVICE_FEATURE_SELECT, 1);
    const hi = this.read32(COMMON_DEVICE_FEATURE);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  writeDriverFeatures(features: bigint): void {
    this.write32(COMMON_DRIVER_FEATURE_SELECT, 0);
    this.write32(COMMON_DRIVER_FEATURE, Number(features & 0xffffffffn));
    this.write32(COMMON_DRIVER_FEATURE_SELECT, 1);
    this.write32(COMMON_DRIVER_FEATURE, Number((features >> 32n) & 0xffffffffn));
  }

  get status(): number {
    return this.read8(COMMON_DEVICE_STATUS);
  }
  set status(v: number) {
    this.write8(COMMON_DEVICE_STATUS, v);
  }
  get numQueues(): number {
    return this.read16(COMMON_NUM_QUEUES);
  }
  get configGeneration(): number {
    return this.read8(COMMON_CONFIG_GENERATION);
  }
}
