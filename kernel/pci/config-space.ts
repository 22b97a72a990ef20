// PCI configuration space through the sysfs `config` file (pci-sysfs.c): reads and
// writes at any offset and width; the kernel turns them into config cycles. Root sees
// all 256 bytes (4096 on PCIe); others only the first 64.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { PciError } from './errors.js';

/** Command register (PCI Local Bus 3.0, 6.2.2) and its bits. */
export const PCI_COMMAND = 0x04;
export const PCI_COMMAND_IO = 1 << 0;
export const PCI_COMMAND_MEMORY = 1 << 1;
export const PCI_COMMAND_MASTER = 1 << 2;
/** Interrupt Disable: set = INTx masked. uio_pci_generic sets it in its handler. */
export const PCI_COMMAND_INTX_DISABLE = 1 << 10;

export class PciConfigSpace {
  private fd: number;
  private readonly scratch = Buffer.alloc(4);

  constructor(readonly path: string) {
    try {
      this.fd = openSync(path, 'r+');
    } catch (e) {
      throw new PciError('ERR_PCI_CONFIG', `cannot open PCI config space ${path} for writing: ${(e as Error).message}`, { cause: e });
    }
  }

  /** `length` bytes from `offset` (a copy). */
  read(offset: number, length: number): Buffer {
    const buf = Buffer.alloc(length);
    const n = readSync(this.fd, buf, 0, length, offset);
    if (n !== length) throw new PciError('ERR_PCI_CONFIG', `${this.path}: read of ${length} bytes at 0x${offset.toString(16)} returned ${n}`);
    return buf;
  }

  read8(offset: number): number {
    return this.readInto(offset, 1).readUInt8(0);
  }
  read16(offset: number): number {
    return this.readInto(offset, 2).readUInt16LE(0);
  }
  read32(offset: number): number {
    return this.readInto(offset, 4).readUInt32LE(0);
  }

  write8(offset: number, value: number): void {
    this.scratch.writeUInt8(value & 0xff, 0);
    this.writeFrom(offset, 1);
  }
  write16(offset: number, value: number): void {
    this.scratch.writeUInt16LE(value & 0xffff, 0);
    this.writeFrom(offset, 2);
  }
  write32(offset: number, value: number): void {
    this.scratch.writeUInt32LE(value >>> 0, 0);
    this.writeFrom(offset, 4);
  }

  /** The command register. */
  command(): number {
    return this.read16(PCI_COMMAND);
  }

  /**
   * Sets memory decoding and bus mastering (the device may then DMA into guest memory:
   * the kernel does not do this for uio_pci_generic) and clears Interrupt Disable.
   * Returns the new command value.
   */
  enableMemoryAndBusMastering(): number {
    const cmd = (this.command() | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) & ~PCI_COMMAND_INTX_DISABLE;
    this.write16(PCI_COMMAND, cmd);
    const back = this.command();
    if ((back & PCI_COMMAND_MASTER) === 0) throw new PciError('ERR_PCI_CONFIG', `${this.path}: bus mastering did not stick (command 0x${back.toString(16)})`);
    return back;
  }

  /** Clears bus mastering (before the DMA memory goes away). */
  disableBusMastering(): void {
    this.write16(PCI_COMMAND, this.command() & ~PCI_COMMAND_MASTER);
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }

  private readInto(offset: number, length: number): Buffer {
    const n = readSync(this.fd, this.scratch, 0, length, offset);
    if (n !== length) throw new PciError('ERR_PCI_CONFIG', `${this.path}: read of ${length} bytes at 0x${offset.toString(16)} returned ${n}`);
    return this.scratch;
  }

  private writeFrom(offset: number, length: number): void {
    const n = writeSync(this.fd, this.scratch, 0, length, offset);
    if (n !== length) throw new PciError('ERR_PCI_CONFIG', `${this.path}: write of ${length} bytes at 0x${offset.toString(16)} wrote ${n}`);
  }
}
