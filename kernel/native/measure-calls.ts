// Measures what an addon call costs here: `node dist/kernel/native/measure-calls.js`.
// Prints ns per call, each next to an empty JS function call and to a bare N-API call
// (pageSize) from the same run, so the ratios, not the absolute times, are the result.
import * as n from './index.js';

function measure(name: string, fn: () => unknown, iters: number): number {
  for (let i = 0; i < Math.min(iters, 10_000); i++) fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) fn();
  const ns = Number(process.hrtime.bigint() - t0) / iters;
  console.log(`${name.padEnd(44)} ${ns.toFixed(1).padStart(9)} ns/call`);
  return ns;
}

async function main(): Promise<void> {
  const raw = n.loadAddon();
  const m = n.mmapAnonymous(1 << 20);
  const view = new Uint8Array(m, 64, 64);
  const efd = n.eventfd();
  const [a, b] = n.unixSocketPair();
  const buf = new Uint8Array(64);
  try {
    measure('empty JS function', () => undefined, 10_000_000);
    measure('pageSize() (bare N-API call + sysconf)', () => raw.pageSize(), 2_000_000);
    measure('addressOf(ArrayBuffer)', () => raw.addressOf(m), 2_000_000);
    measure('addressOf(Uint8Array)', () => raw.addressOf(view), 2_000_000);
    measure('addressOf via the index.ts wrapper', () => n.addressOf(m), 2_000_000);
    measure('eventfdRead, empty (read(2) -> EAGAIN)', () => raw.eventfdRead(efd), 500_000);
    measure('eventfdWrite + eventfdRead', () => (raw.eventfdWrite(efd, 1), raw.eventfdRead(efd)), 250_000);
    measure('read(2) -> EAGAIN on a socket', () => raw.read(b, buf), 500_000);
    measure('recvMsg -> EAGAIN (maxFds 8)', () => raw.recvMsg(b, buf, 8), 250_000);
    measure('sendMsg 64 B + recvMsg 64 B', () => (raw.sendMsg(a, buf), raw.recvMsg(b, buf, 8)), 200_000);
    const events = 50_000;
    let count = 0;
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve) => {
      const w = n.watchFd(efd, () => {
        raw.eventfdRead(efd);
        if (++count === events) {
          w.stop();
          resolve();
        } else raw.eventfdWrite(efd, 1);
      });
      raw.eventfdWrite(efd, 1);
    });
    const per = Number(process.hrtime.bigint() - t0) / events;
    console.log(`${'watchFd: eventfd write -> callback -> read'.padEnd(44)} ${per.toFixed(1).padStart(9)} ns/event`);
  } finally {
    n.munmap(m);
    n.close(efd);
    n.close(a);
    n.close(b);
  }
}

await main();
