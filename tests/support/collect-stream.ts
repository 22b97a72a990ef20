import type { Duplex } from 'node:stream';

/** Everything `s` delivers until its end, as one Buffer; rejects on its error. */
export function collect(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}
