// Parsers for the small text files the kernel exposes per PCI device under
// /sys/bus/pci/devices/<address>/ (Documentation/ABI/testing/sysfs-bus-pci and
// drivers/pci/pci-sysfs.c). Each accepts exactly what the kernel writes and rejects
// anything else with a message that names the file and the content.
import { PciError } from './errors.js';

const show = (text: string): string => JSON.stringify(text.length > 80 ? text.slice(0, 80) + '...' : text);

/**
 * A hexadecimal id file: `vendor`, `device`, `subsystem_vendor` hold "0x1af4\n",
 * `class` holds "0x020000\n". `digits` is the exact number of hex digits expected.
 */
export function parseHexId(text: string, digits: number, what: string): number {
  const m = /^0x([0-9a-fA-F]+)\n?$/.exec(text);
  if (!m || m[1]!.length !== digits) {
    throw new PciError('ERR_PCI_SYSFS_FORMAT', `${what}: expected "0x" and ${digits} hex digits, got ${show(text)}`);
  }
  return parseInt(m[1]!, 16);
}

/** A PCI address as sysfs names devices: domain:bus:device.function, "0000:00:03.0". */
export function parsePciAddress(text: string): { domain: number; bus: number; device: number; fn: number } {
  const m = /^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/.exec(text);
  if (!m) throw new PciError('ERR_PCI_SYSFS_FORMAT', `not a PCI address (dddd:bb:dd.f): ${show(text)}`);
  const device = parseInt(m[3]!, 16);
  if (device > 31) throw new PciError('ERR_PCI_SYSFS_FORMAT', `PCI address ${text}: device number ${device} is above 31`);
  return { domain: parseInt(m[1]!, 16), bus: parseInt(m[2]!, 16), device, fn: Number(m[4]) };
}

/** IORESOURCE_* flags of the `resource` file (include/linux/ioport.h). */
export const IORESOURCE_IO = 0x100;
export const IORESOURCE_MEM = 0x200;
export const IORESOURCE_PREFETCH = 0x2000;
export const IORESOURCE_MEM_64 = 0x100000;

/** One line of the `resource` file: a BAR (lines 0-5), the ROM (6), bridge windows. */
export interface PciResource {
  /** First address (bus address of the BAR); 0 with end 0 when unused. */
  start: bigint;
  /** Last address (inclusive). */
  end: bigint;
  flags: number;
  /** end - start + 1, or 0 when unused. */
  size: number;
  isMemory: boolean;
  isIo: boolean;
}

/**
 * The `resource` file: one line per resource, "0x%016llx 0x%016llx 0x%016llx\n"
 * (start, end, flags; pci-sysfs.c resource_show).
 */
export function parseResourceFile(text: string): PciResource[] {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length === 0) throw new PciError('ERR_PCI_SYSFS_FORMAT', 'resource file is empty');
  return lines.map((line, i) => {
    const m = /^0x([0-9a-f]{16}) 0x([0-9a-f]{16}) 0x([0-9a-f]{16})$/.exec(line);
    if (!m) throw new PciError('ERR_PCI_SYSFS_FORMAT', `resource file line ${i}: expected three 0x%016x numbers, got ${show(line)}`);
    const start = BigInt('0x' + m[1]);
    const end = BigInt('0x' + m[2]);
    const flags = Number(BigInt('0x' + m[3]) & 0xffffffffn);
    const unused = start === 0n && end === 0n;
    if (!unused && end < start) throw new PciError('ERR_PCI_SYSFS_FORMAT', `resource file line ${i}: end 0x${end.toString(16)} is below start 0x${start.toString(16)}`);
    const size = unused ? 0 : Number(end - start + 1n);
    return { start, end, flags, size, isMemory: (flags & IORESOURCE_MEM) !== 0, isIo: (flags & IORESOURCE_IO) !== 0 };
  });
}

/** A uio device directory name ("uio0") -> its number. */
export function parseUioName(name: string): number {
  const m = /^uio(\d{1,4})$/.exec(name);
  if (!m) throw new PciError('ERR_PCI_SYSFS_FORMAT', `not a uio device name: ${show(name)}`);
  return Number(m[1]);
}
