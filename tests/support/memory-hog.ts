// Guest program of tests/guest-oom.test.ts (run as /app/main.js as it is: no imports):
// takes memory outside V8's heap, 4 MiB at a time and touched, until the kernel's OOM
// killer ends it.
const held: Buffer[] = [];
process.stdout.write('memory-hog: taking memory\n');
for (;;) {
  const b = Buffer.allocUnsafe(4 << 20);
  b.fill(1);
  held.push(b);
  if (held.length % 4 === 0) process.stdout.write(`memory-hog: ${held.length * 4} MiB\n`);
}
