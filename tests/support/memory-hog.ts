// Guest program of tests/guest-oom.test.ts (bundled to dist/bundles/memory-hog.js): boots
// as every guest program does (boot() keeps node's code in RAM, see lockCodeInMemory),
// then takes memory outside V8's heap, 32 MiB at a time and touched, until the kernel's
// OOM killer ends it.
import { boot } from '../../kernel/guest/boot.js';

boot(
  'memory-hog',
  () => {
    const held: Buffer[] = [];
    process.stdout.write('memory-hog: taking memory\n');
    for (;;) {
      const b = Buffer.allocUnsafe(32 << 20);
      b.fill(1);
      held.push(b);
      process.stdout.write(`memory-hog: ${held.length * 32} MiB\n`);
    }
  },
  { dmaPages: 1 },
);
