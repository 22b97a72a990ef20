// Byte copies between any two Uint8Arrays without making views (Buffer.prototype.copy
// accepts any Uint8Array as its receiver), so per-packet paths allocate nothing.
const nativeCopy = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;

/** Copies src[srcStart, srcStart + length) to dst[dstStart...]; returns length. */
export function copyBytes(src: Uint8Array, srcStart: number, dst: Uint8Array, dstStart: number, length: number): number {
  return nativeCopy.call(src, dst, dstStart, srcStart, srcStart + length);
}
