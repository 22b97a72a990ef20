// QEMU's own virtio-rng device with `packed=on` (virtio-rng-pci on q35, virtio-rng-device
// on microvm's virtio-mmio): our driver's packed half (virtio 1.2, 2.8) against a device
// nobody here wrote, every phase of appliance/guest/rng-probe.ts with --ring=packed:
// tests/support/rng-probe-suite.ts.
import { rngProbeTests } from './support/rng-probe-suite.js';

rngProbeTests({ file: 'guest-rng-packed', packed: true });
