// One PCI function opened for user-space driving: its config space, its capabilities,
// its mapped BARs (each mapped once) and, when bound, its uio device.
import { PciConfigSpace } from './config-space.js';
import { type PciCapability, walkCapabilities } from './capabilities.js';
import type { PciDeviceInfo } from './devices.js';
import { type MappedBar, mapBar, unmapBar } from './bar.js';
import type { UioDevice } from './uio-bind.js';
import { join } from 'node:path';

export class PciFunction {
  readonly config: PciConfigSpace;
  private readonly bars = new Map<number, MappedBar>();

  constructor(
    readonly info: PciDeviceInfo,
    /** The uio device when bound to uio_pci_generic (interrupts), else null. */
    readonly uio: UioDevice | null,
  ) {
    this.config = new PciConfigSpace(join(info.path, 'config'));
  }

  get address(): string {
    return this.info.address;
  }

  /** The first 256 bytes of config space (a copy). */
  configSnapshot(): Uint8Array {
    return this.config.read(0, 256);
  }

  capabilities(): PciCapability[] {
    return walkCapabilities(this.configSnapshot());
  }

  /** BAR `index`, mapped on first use. */
  bar(index: number): MappedBar {
    let b = this.bars.get(index);
    if (b === undefined) {
      b = mapBar(this.info.path, index);
      this.bars.set(index, b);
    }
    return b;
  }

  /** Unmaps the BARs and closes config space. Views over the BARs become empty. */
  close(): void {
    for (const b of this.bars.values()) unmapBar(b);
    this.bars.clear();
    this.config.close();
  }
}
