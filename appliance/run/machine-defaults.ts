// Per-machine defaults of the appliance, in a module with no heavy imports (the command
// line parser reads them before anything is built).
import type { Machine } from '../image/guest.js';

/** The default machine: microvm (our kernel, virtio-mmio), in 128 MiB. */
export const DEFAULT_MACHINE: Machine = 'microvm';
export const DEFAULT_MEMORY_MIB: Record<Machine, number> = { microvm: 128, q35: 1024 };
/**
 * DMA memory of the guest program with our drivers (2 MiB hugepages, reserved at boot):
 * the drivers take ~12 MiB, the file cache what is left (guest-entry.ts fileCacheBudget).
 * In 128 MiB the microvm guest keeps 20 MiB of it; q35 (1 GiB) keeps 48 MiB.
 */
export const DMA_PAGES: Record<Machine, number> = { microvm: 10, q35: 24 };
