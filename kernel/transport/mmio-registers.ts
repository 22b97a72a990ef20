// The register layout of a virtio-mmio device, version 2 (virtio 1.2, 4.2.2 "MMIO Device
// Register Layout", table 4.1), and the window through which the transport reaches it.
//
// Access discipline (4.2.2.2 "Driver Requirements: MMIO Device Register Layout"): the
// control registers (0x000-0x0ff) are read and written only as 32-bit aligned accesses;
// the device configuration space (from 0x100) with accesses of each field's width (8, 16
// or 32 bits; a 64-bit field as two 32-bit halves). QEMU's virtio-mmio.c answers any
// other width on a control register with a guest error and a 0. In JavaScript a
// typed-array element access is one load or store of the element's width; DataView is
// never used (V8's generic DataView builtins may assemble a u32 from byte loads), nor
// Atomics (on x86 a seq-cst store is an XCHG, which QEMU emulates on MMIO as a read and
// then a write).
import { VirtioMmioError } from './mmio-errors.js';

/** Register offsets, in bytes from the start of the window (4.2.2, table 4.1). */
export const MMIO_MAGIC_VALUE = 0x000; // R: 0x74726976 ("virt")
export const MMIO_VERSION = 0x004; // R: 2 (1 = legacy, 4.2.4)
export const MMIO_DEVICE_ID = 0x008; // R: virtio device id; 0 = no device
export const MMIO_VENDOR_ID = 0x00c; // R
export const MMIO_DEVICE_FEATURES = 0x010; // R: 32 bits selected by DeviceFeaturesSel
export const MMIO_DEVICE_FEATURES_SEL = 0x014; // W
export const MMIO_DRIVER_FEATURES = 0x020; // W: 32 bits selected by DriverFeaturesSel
export const MMIO_DRIVER_FEATURES_SEL = 0x024; // W
export const MMIO_QUEUE_SEL = 0x030; // W
export const MMIO_QUEUE_NUM_MAX = 0x034; // R: 0 = the selected queue does not exist
export const MMIO_QUEUE_NUM = 0x038; // W
export const MMIO_QUEUE_READY = 0x044; // RW
export const MMIO_QUEUE_NOTIFY = 0x050; // W: the queue index
export const MMIO_INTERRUPT_STATUS = 0x060; // R
export const MMIO_INTERRUPT_ACK = 0x064; // W
export const MMIO_STATUS = 0x070; // RW: device status (2.1); writing 0 resets
export const MMIO_QUEUE_DESC_LOW = 0x080; // W
export const MMIO_QUEUE_DESC_HIGH = 0x084; // W
export const MMIO_QUEUE_DRIVER_LOW = 0x090; // W (the available ring)
export const MMIO_QUEUE_DRIVER_HIGH = 0x094; // W
export const MMIO_QUEUE_DEVICE_LOW = 0x0a0; // W (the used ring)
export const MMIO_QUEUE_DEVICE_HIGH = 0x0a4; // W
export const MMIO_SHM_SEL = 0x0ac; // W
export const MMIO_SHM_LEN_LOW = 0x0b0; // R
export const MMIO_SHM_LEN_HIGH = 0x0b4; // R
export const MMIO_SHM_BASE_LOW = 0x0b8; // R
export const MMIO_SHM_BASE_HIGH = 0x0bc; // R
export const MMIO_QUEUE_RESET = 0x0c0; // RW
export const MMIO_CONFIG_GENERATION = 0x0fc; // R
export const MMIO_CONFIG = 0x100; // device configuration space

/** MagicValue: little-endian "virt". */
export const MMIO_MAGIC = 0x74726976;
/** Version of the modern (virtio 1.x) register layout; 1 is the legacy one (4.2.4). */
export const MMIO_VERSION_MODERN = 2;
export const MMIO_VERSION_LEGACY = 1;
/** Bytes of one device's window: control registers and the configuration space. */
export const MMIO_WINDOW_BYTES = 0x200;
/** Bytes of the configuration space (0x100-0x1ff). */
export const MMIO_CONFIG_BYTES = MMIO_WINDOW_BYTES - MMIO_CONFIG;

/** InterruptStatus / InterruptACK bits (4.2.2, 4.2.3.4). */
export const MMIO_INT_VRING = 1; // used buffer notification
export const MMIO_INT_CONFIG = 2; // configuration change notification

const REGISTER_NAMES: ReadonlyMap<number, string> = new Map([
  [MMIO_MAGIC_VALUE, 'MagicValue'],
  [MMIO_VERSION, 'Version'],
  [MMIO_DEVICE_ID, 'DeviceID'],
  [MMIO_VENDOR_ID, 'VendorID'],
  [MMIO_DEVICE_FEATURES, 'DeviceFeatures'],
  [MMIO_DEVICE_FEATURES_SEL, 'DeviceFeaturesSel'],
  [MMIO_DRIVER_FEATURES, 'DriverFeatures'],
  [MMIO_DRIVER_FEATURES_SEL, 'DriverFeaturesSel'],
  [MMIO_QUEUE_SEL, 'QueueSel'],
  [MMIO_QUEUE_NUM_MAX, 'QueueNumMax'],
  [MMIO_QUEUE_NUM, 'QueueNum'],
  [MMIO_QUEUE_READY, 'QueueReady'],
  [MMIO_QUEUE_NOTIFY, 'QueueNotify'],
  [MMIO_INTERRUPT_STATUS, 'InterruptStatus'],
  [MMIO_INTERRUPT_ACK, 'InterruptACK'],
  [MMIO_STATUS, 'Status'],
  [MMIO_QUEUE_DESC_LOW, 'QueueDescLow'],
  [MMIO_QUEUE_DESC_HIGH, 'QueueDescHigh'],
  [MMIO_QUEUE_DRIVER_LOW, 'QueueDriverLow'],
  [MMIO_QUEUE_DRIVER_HIGH, 'QueueDriverHigh'],
  [MMIO_QUEUE_DEVICE_LOW, 'QueueDeviceLow'],
  [MMIO_QUEUE_DEVICE_HIGH, 'QueueDeviceHigh'],
  [MMIO_SHM_SEL, 'SHMSel'],
  [MMIO_SHM_LEN_LOW, 'SHMLenLow'],
  [MMIO_SHM_LEN_HIGH, 'SHMLenHigh'],
  [MMIO_SHM_BASE_LOW, 'SHMBaseLow'],
  [MMIO_SHM_BASE_HIGH, 'SHMBaseHigh'],
  [MMIO_QUEUE_RESET, 'QueueReset'],
  [MMIO_CONFIG_GENERATION, 'ConfigGeneration'],
  [MMIO_CONFIG, 'Config'],
]);

const hex3 = (n: number): string => '0x' + n.toString(16).padStart(3, '0');

/** "Status (0x070)": a register as messages name it. */
export function registerName(offset: number): string {
  return `${REGISTER_NAMES.get(offset) ?? 'register'} (${hex3(offset)})`;
}

/**
 * Everything the transport does to a device goes through this: 32-bit control
 * registers, and the configuration space by field width. Offsets of read32/write32 are
 * from the start of the window (the MMIO_* constants); offsets of readConfig* are from
 * the start of the configuration space (0 = MMIO_CONFIG).
 */
export interface MmioRegisterWindow {
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  readConfig8(offset: number): number;
  readConfig16(offset: number): number;
  readConfig32(offset: number): number;
  /** Releases what backs the window (an unmapping); called once, by the transport's close(). */
  close?(): void;
}

/** The three views a MappedMmioWindow accesses, each covering exactly the 0x200-byte window. */
export interface MmioWindowViews {
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
}

/** Views over the window at `byteOffset` of `buffer` (a mapped page may hold several devices). */
export function mmioWindowViews(buffer: ArrayBufferLike, byteOffset: number): MmioWindowViews {
  if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % 4 !== 0 || byteOffset + MMIO_WINDOW_BYTES > buffer.byteLength) {
    throw new VirtioMmioError(
      'ERR_VIRTIO_MMIO_WINDOW',
      `a virtio-mmio register window at offset ${byteOffset} must be 4-byte aligned and fit its ${buffer.byteLength}-byte mapping (${MMIO_WINDOW_BYTES} bytes)`,
    );
  }
  return {
    u8: new Uint8Array(buffer, byteOffset, MMIO_WINDOW_BYTES),
    u16: new Uint16Array(buffer, byteOffset, MMIO_WINDOW_BYTES >>> 1),
    u32: new Uint32Array(buffer, byteOffset, MMIO_WINDOW_BYTES >>> 2),
  };
}

/**
 * The guest's window: the registers in a mapped page (an ArrayBuffer from mmap of
 * /dev/uioN), each access one typed-array element load or store of the right width.
 * Offsets are checked (a misaligned or out-of-range offset would silently reach another
 * register), so a bad one throws instead of touching the device.
 */
export class MappedMmioWindow implements MmioRegisterWindow {
  private readonly u8: Uint8Array;
  private readonly u16: Uint16Array;
  private readonly u32: Uint32Array;
  private released = false;

  constructor(
    views: MmioWindowViews,
    private readonly onClose: (() => void) | null = null,
  ) {
    this.u8 = views.u8;
    this.u16 = views.u16;
    this.u32 = views.u32;
  }

  /** The window at `byteOffset` of a mapped buffer; `onClose` unmaps it. */
  static over(buffer: ArrayBufferLike, byteOffset: number, onClose: (() => void) | null = null): MappedMmioWindow {
    return new MappedMmioWindow(mmioWindowViews(buffer, byteOffset), onClose);
  }

  read32(offset: number): number {
    checkRegister(offset);
    return this.u32[offset >>> 2]!;
  }

  write32(offset: number, value: number): void {
    checkRegister(offset);
    this.u32[offset >>> 2] = value;
  }

  readConfig8(offset: number): number {
    checkConfig(offset, 1);
    return this.u8[MMIO_CONFIG + offset]!;
  }

  readConfig16(offset: number): number {
    checkConfig(offset, 2);
    return this.u16[(MMIO_CONFIG + offset) >>> 1]!;
  }

  readConfig32(offset: number): number {
    checkConfig(offset, 4);
    return this.u32[(MMIO_CONFIG + offset) >>> 2]!;
  }

  close(): void {
    if (this.released) return;
    this.released = true;
    this.onClose?.();
  }
}

function checkRegister(offset: number): void {
  // One comparison: only a whole multiple of 4 in 0..0xfc survives the mask.
  if (offset !== (offset & 0xfc)) {
    throw new VirtioMmioError('ERR_VIRTIO_MMIO_WINDOW', `register offset ${offset} is not a 32-bit aligned control register (0x000-0x0fc)`);
  }
}

function checkConfig(offset: number, width: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset % width !== 0 || offset + width > MMIO_CONFIG_BYTES) {
    throw new VirtioMmioError('ERR_VIRTIO_MMIO_WINDOW', `a ${width * 8}-bit configuration access at offset ${offset} is not aligned inside the ${MMIO_CONFIG_BYTES}-byte configuration space`);
  }
}

// ---- 64-bit values through two 32-bit registers (features, ring addresses)

const TWO_32 = 0x1_0000_0000;

/** The low and high 32 bits of a 64-bit feature set. */
export function splitFeatures(features: bigint): [low: number, high: number] {
  return [Number(features & 0xffffffffn), Number((features >> 32n) & 0xffffffffn)];
}

export function joinFeatures(low: number, high: number): bigint {
  return (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0);
}

/** The low and high 32 bits of an address (a safe non-negative integer). */
export function splitAddress(addr: number): [low: number, high: number] {
  return [addr >>> 0, Math.floor(addr / TWO_32) >>> 0];
}

export function joinAddress(low: number, high: number): number {
  return (high >>> 0) * TWO_32 + (low >>> 0);
}
