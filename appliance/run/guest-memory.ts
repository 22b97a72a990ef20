// How much guest RAM an appliance image needs, and how an out-of-memory guest shows on
// its console. The launcher refuses a --memory below the need before it starts anything,
// and names an out-of-memory death as such (with the need) instead of "the kernel
// panicked".
//
// The figures are measured, not derived: see MICROVM_BASE_MIB and Q35_BASE_MIB.
import type { AnyGuestImage } from '../image/guest.js';

const MiB = 1024 * 1024;

/**
 * microvm: what the guest uses besides the hugepages: the kernel and its tables
 * (~13 MiB reserved at boot), node's pages in the page cache (~45 MiB of the binary are
 * touched; read from the squashfs disk, they can be dropped and read again, which is
 * what happens below the need: it thrashes), node's heap and the appliance. Measured
 * with 20 MiB of hugepages and `ab -c 8 -n 1000` on big.html right after boot: 72 MiB
 * served it as fast as 128 MiB (214 and 254 req/s), 64 MiB booted but thrashed (33
 * req/s). 56 + hugepages keeps 72 MiB as the floor of that configuration.
 */
export const MICROVM_BASE_MIB = 56;
/**
 * q35: Debian's kernel and its modules, node's heap and the appliance, and slack; the
 * initramfs comes on top twice (see memoryNeed). 256 MiB with today's 107 MB
 * initramfs and 64 MiB of hugepages panicked while unpacking.
 */
export const Q35_BASE_MIB = 128;

export interface MemoryNeed {
  /** Guest RAM needed, MiB (rounded up to a multiple of 8). */
  mib: number;
  /** How it adds up, for messages. */
  breakdown: string;
}

/** The guest RAM `image` needs with `hugepages` 2 MiB pages reserved. */
export function memoryNeed(image: AnyGuestImage, hugepages: number): MemoryNeed {
  const huge = hugepages * 2;
  const roundUp = (n: number): number => Math.ceil(n / 8) * 8;
  if (image.machine === 'q35') {
    // The kernel unpacks the initramfs (an uncompressed cpio) into RAM while the archive
    // itself is still there: both at once, at boot.
    const initrd = Math.ceil(image.initramfs.size / MiB);
    return {
      mib: roundUp(Q35_BASE_MIB + 2 * initrd + huge),
      breakdown: `${initrd} MiB initramfs twice while it is unpacked, ${huge} MiB of hugepages for DMA, ${Q35_BASE_MIB} MiB for the kernel, node and the appliance`,
    };
  }
  return {
    mib: roundUp(MICROVM_BASE_MIB + huge),
    breakdown: `${huge} MiB of hugepages for DMA, ${MICROVM_BASE_MIB} MiB for the kernel, node's pages and the appliance`,
  };
}

/** Console lines of a Linux guest that ran out of memory (OOM killer, panics, a failed initramfs unpack). */
const OOM_PATTERNS: ReadonlyArray<readonly [RegExp, string]> = [
  [/System is deadlocked on memory/, 'the kernel panicked: "System is deadlocked on memory"'],
  [/Out of memory and no killable processes/, 'the kernel panicked: "Out of memory and no killable processes"'],
  [/Out of memory: Killed process \d+ \(([^)]*)\)/, 'the kernel\'s OOM killer killed a process'],
  [/Initramfs unpacking failed: write error/, 'the initramfs did not fit while it was unpacked'],
  [/hugepages=\d+.*(?:failed|cannot)|HugeTLB: allocating \d+ of page size [^ ]+ failed/, 'the kernel could not reserve the hugepages'],
];

/** What a console shows of an out-of-memory guest, or null when it shows nothing of the kind. */
export function outOfMemoryIn(console: string): string | null {
  for (const [re, what] of OOM_PATTERNS) {
    const m = re.exec(console);
    if (m) return m[1] !== undefined ? `${what} (${m[1]})` : what;
  }
  return null;
}
