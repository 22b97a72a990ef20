// Reading device configuration bytes the way both transports must: each access of a
// field's width, aligned (4.1.3.1 for PCI, 4.2.2.2 for MMIO: 8-bit fields by byte,
// 16-bit by aligned u16, 32- and 64-bit by aligned u32), here simply the widest aligned
// access that fits, and repeated until the generation counter reads the same before and
// after (2.5.1 "Driver Requirements: Device Configuration Space").

/** Width-exact reads at offsets from the start of the configuration space. */
export interface ConfigReader {
  readConfig8(offset: number): number;
  readConfig16(offset: number): number;
  readConfig32(offset: number): number;
}

/**
 * `length` bytes from `offset` (a copy) with the generation unchanged over the read, or
 * null when it changed on every one of `attempts` tries.
 */
export function readConfigStable(reader: ConfigReader, generation: () => number, offset: number, length: number, attempts: number): Uint8Array | null {
  const out = new Uint8Array(length);
  const dv = new DataView(out.buffer);
  for (let attempt = 0; attempt < attempts; attempt++) {
    const before = generation();
    let i = 0;
    while (i < length) {
      const a = offset + i;
      if (a % 4 === 0 && length - i >= 4) {
        dv.setUint32(i, reader.readConfig32(a), true);
        i += 4;
      } else if (a % 2 === 0 && length - i >= 2) {
        dv.setUint16(i, reader.readConfig16(a), true);
        i += 2;
      } else {
        out[i] = reader.readConfig8(a);
        i += 1;
      }
    }
    if (generation() === before) return out;
  }
  return null;
}
