// Parsers for the sysfs text of virtio-mmio platform devices and of their uio maps. Each
// accepts exactly what the kernel writes and rejects anything else with a message that
// names the file and shows the content.
//   <device>/virtioN/device          "0x%04x\n" (drivers/virtio/virtio.c device_show)
//   <device>/uio/uioN/maps/map0/addr "%pa\n": 0x and the hex digits of a phys_addr_t
//   .../map0/size                    "%pa\n"
//   .../map0/offset                  "0x%llx\n" (drivers/uio/uio.c map_*_show)
import { PlatformError } from './errors.js';

const show = (text: string): string => JSON.stringify(text.length > 80 ? text.slice(0, 80) + '...' : text);

/** The virtio device id in a virtio device's `device` file: "0x0013\n" -> 19. */
export function parseVirtioDeviceIdFile(text: string, file: string): number {
  const m = /^0x([0-9a-f]{4})\n?$/.exec(text);
  if (!m) throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${file}: expected "0x" and 4 hex digits (a virtio device id), got ${show(text)}`);
  return parseInt(m[1]!, 16);
}

/** One hexadecimal value of a uio map file ("0x00000000feb00000\n", "0x200\n"), at most 2^53 - 1. */
export function parseUioMapValue(text: string, file: string): number {
  const m = /^0x([0-9a-f]{1,16})\n?$/.exec(text);
  if (!m) throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${file}: expected "0x" and 1 to 16 lowercase hex digits, got ${show(text)}`);
  const v = BigInt('0x' + m[1]);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${file}: 0x${m[1]} is beyond 2^53`);
  return Number(v);
}

/** A uio memory map: the page(s) to mmap and where in them a register block starts. */
export interface UioMemoryMap {
  /** Physical address of the mapping's first byte (page aligned). */
  addr: number;
  /** Bytes to mmap (whole pages). */
  size: number;
  /** Where the block starts inside the mapping. */
  offset: number;
  /** Physical address of the block (addr + offset). */
  blockAddr: number;
}

export interface UioMapTexts {
  addr: string;
  size: string;
  offset: string;
}

/**
 * A map's addr, size and offset files (`dir` names them in messages), checked to hold a
 * block of `blockBytes` at a 4-byte aligned offset inside whole pages of `pageSize`.
 * Older kernels print a page-unaligned addr with offset = addr's low bits; the page is
 * then addr rounded down (uio_mmap_physical maps from there), and the block is at
 * offset either way.
 */
export function parseUioMap(texts: UioMapTexts, dir: string, blockBytes: number, pageSize = 4096): UioMemoryMap {
  const rawAddr = parseUioMapValue(texts.addr, `${dir}/addr`);
  const size = parseUioMapValue(texts.size, `${dir}/size`);
  const offset = parseUioMapValue(texts.offset, `${dir}/offset`);
  const inPage = rawAddr % pageSize;
  if (inPage !== 0 && inPage !== offset) {
    throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${dir}: addr 0x${rawAddr.toString(16)} is not page aligned and offset 0x${offset.toString(16)} is not its offset in the page`);
  }
  const addr = rawAddr - inPage;
  if (size === 0 || size % pageSize !== 0) {
    throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${dir}/size: 0x${size.toString(16)} is not a whole number of ${pageSize}-byte pages`);
  }
  if (offset % 4 !== 0 || offset + blockBytes > size) {
    throw new PlatformError('ERR_PLATFORM_SYSFS_FORMAT', `${dir}/offset: 0x${offset.toString(16)} does not leave a 4-byte aligned block of 0x${blockBytes.toString(16)} bytes inside the 0x${size.toString(16)}-byte map`);
  }
  return { addr, size, offset, blockAddr: addr + offset };
}

/** Platform device names of virtio-mmio transports (drivers/virtio/virtio_mmio.c, ACPI "LNRO0005"). */
const VIRTIO_MMIO_NAME = /^(?:virtio-mmio\.(\d{1,9})|LNRO0005:([0-9a-fA-F]{2,8}))$/;

/**
 * True for the names the kernel gives virtio-mmio platform devices: `virtio-mmio.N` for
 * those of the command line (virtio_mmio.device=SIZE@ADDR:IRQ), `LNRO0005:NN` for those
 * described by ACPI (QEMU's microvm).
 */
export function isVirtioMmioDeviceName(name: string): boolean {
  return VIRTIO_MMIO_NAME.test(name);
}

/** Orders virtio-mmio device names by kind, then by their number (virtio-mmio.2 before virtio-mmio.10). */
export function compareVirtioMmioNames(a: string, b: string): number {
  const key = (n: string): [string, number] => {
    const m = VIRTIO_MMIO_NAME.exec(n);
    if (!m) return [n, 0];
    return m[1] !== undefined ? ['virtio-mmio', Number(m[1])] : ['LNRO0005', parseInt(m[2]!, 16)];
  };
  const [ka, na] = key(a);
  const [kb, nb] = key(b);
  return ka < kb ? -1 : ka > kb ? 1 : na - nb;
}
