// Free loopback TCP ports for tests that start servers (QEMU forwards, npm start).
import { type AddressInfo, type Server, createServer } from 'node:net';

function listen(port: number): Promise<Server | null> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(null));
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

const close = (s: Server): Promise<void> => new Promise((r) => s.close(() => r()));

/** A port free on 127.0.0.1 right now. */
export async function freeTcpPort(): Promise<number> {
  for (;;) {
    const s = await listen(0);
    if (s === null) continue;
    const port = (s.address() as AddressInfo).port;
    await close(s);
    return port;
  }
}

/** A port P such that P and P+1 are both free on 127.0.0.1 right now. */
export async function freePortPair(): Promise<number> {
  for (;;) {
    const a = await listen(0);
    if (a === null) continue;
    const port = (a.address() as AddressInfo).port;
    const b = port < 65534 ? await listen(port + 1) : null;
    await close(a);
    if (b !== null) {
      await close(b);
      return port;
    }
  }
}
