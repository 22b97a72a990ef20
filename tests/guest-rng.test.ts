// QEMU's own virtio-rng device as QEMU offers it by default (split rings, virtio 1.2 2.7),
// driven by appliance/guest/rng-probe.ts on both machines: tests/support/rng-probe-suite.ts.
import { rngProbeTests } from './support/rng-probe-suite.js';

rngProbeTests({ file: 'guest-rng', packed: false });
