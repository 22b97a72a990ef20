// The virtio PCI capability parser (kernel/pci/capabilities.ts walks the list,
// kernel/transport/pci-virtio-caps.ts reads the virtio structures, virtio 1.2 4.1.4):
// the input is a device's 256-byte config space. Invariants: a malformed list or
// structure is refused with a PciError saying what and where; an accepted layout names
// the first capability of each type with a valid BAR (4.1.4.1) and keeps the rules of
// 4.1.4.3-4.1.4.5 (common block >= 0x38 bytes, non-empty ISR, even notify offset and
// multiplier).
import { PCI_CAP_ID_VNDR, PCI_CAPABILITY_LIST, PCI_STATUS, PCI_STATUS_CAP_LIST, walkCapabilities, type PciCapability } from '../../kernel/pci/capabilities.js';
import { PciError } from '../../kernel/pci/errors.js';
import { VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG, parseVirtioCaps, type VirtioPciRegion } from '../../kernel/transport/pci-virtio-caps.js';
import { check, type FuzzTarget } from '../engine/target.js';

const CONFIG_BYTES = 256;

function refusal(e: unknown, what: string): void {
  check(e instanceof PciError, () => `${what} threw ${(e as Error)?.name}: ${(e as Error)?.message}, not a PciError`);
  check(e.message.length > 0 && (e.code === 'ERR_PCI_CAPABILITY' || e.code === 'ERR_PCI_CONFIG'), () => `${what}: PciError ${e.code} "${e.message}"`);
}

/** The first vendor capability of `type` whose BAR is valid (4.1.4.1), as the spec states the rule. */
function firstOfType(config: Uint8Array, caps: readonly PciCapability[], type: number): VirtioPciRegion | null {
  const dv = new DataView(config.buffer, config.byteOffset, config.byteLength);
  for (const c of caps) {
    if (c.id !== PCI_CAP_ID_VNDR || config[c.offset + 3] !== type || config[c.offset + 4]! > 5) continue;
    return { bar: config[c.offset + 4]!, offset: dv.getUint32(c.offset + 8, true), length: dv.getUint32(c.offset + 12, true) };
  }
  return null;
}

function sameRegion(a: VirtioPciRegion | null, b: VirtioPciRegion | null, what: string): void {
  check(a !== null && b !== null && a.bar === b.bar && a.offset === b.offset && a.length === b.length, () => `${what}: parsed ${JSON.stringify(a)}, the first capability of its type says ${JSON.stringify(b)}`);
}

function run(input: Uint8Array): void {
  const config = new Uint8Array(CONFIG_BYTES);
  config.set(input.subarray(0, CONFIG_BYTES));
  let caps: PciCapability[];
  try {
    caps = walkCapabilities(config);
  } catch (e) {
    refusal(e, 'walkCapabilities');
    return;
  }
  const offsets = new Set<number>();
  for (const c of caps) {
    check(c.offset >= 0x40 && c.offset <= 0xfc && c.offset % 4 === 0, () => `capability at 0x${c.offset.toString(16)}: outside 0x40..0xfc or misaligned`);
    check(!offsets.has(c.offset), () => `capability at 0x${c.offset.toString(16)} listed twice`);
    check(c.id === config[c.offset], () => `capability id ${c.id} is not config[0x${c.offset.toString(16)}]`);
    offsets.add(c.offset);
  }
  check(caps.length === 0 || (config[PCI_STATUS]! & PCI_STATUS_CAP_LIST) !== 0, () => 'capabilities listed without the status bit');
  check(caps.length === 0 || caps[0]!.offset === (config[PCI_CAPABILITY_LIST]! & 0xfc), () => 'the list does not start at the capabilities pointer');
  let layout;
  try {
    layout = parseVirtioCaps(config, caps);
  } catch (e) {
    refusal(e, 'parseVirtioCaps');
    return;
  }
  sameRegion(layout.common, firstOfType(config, caps, VIRTIO_PCI_CAP_COMMON_CFG), 'common configuration');
  sameRegion(layout.notify, firstOfType(config, caps, VIRTIO_PCI_CAP_NOTIFY_CFG), 'notification');
  sameRegion(layout.isr, firstOfType(config, caps, VIRTIO_PCI_CAP_ISR_CFG), 'ISR');
  const dev = firstOfType(config, caps, VIRTIO_PCI_CAP_DEVICE_CFG);
  if (dev === null) check(layout.device === null, () => 'a device configuration block without its capability');
  else sameRegion(layout.device, dev, 'device configuration');
  check(layout.common.length >= 0x38, () => `common block of ${layout.common.length} bytes accepted`);
  check(layout.isr.length >= 1, () => 'empty ISR block accepted');
  check(layout.notify.offset % 2 === 0 && layout.notify.multiplier % 2 === 0, () => `odd notify offset ${layout.notify.offset} or multiplier ${layout.notify.multiplier} accepted`);
}

/** A config space with QEMU's layout of a modern virtio device: common, ISR, device, notify capabilities. */
function qemuLike(): Uint8Array {
  const c = new Uint8Array(CONFIG_BYTES);
  const dv = new DataView(c.buffer);
  dv.setUint16(0, 0x1af4, true);
  dv.setUint16(2, 0x1053, true);
  c[PCI_STATUS] = PCI_STATUS_CAP_LIST;
  c[PCI_CAPABILITY_LIST] = 0x84;
  const cap = (at: number, next: number, len: number, type: number, bar: number, offset: number, length: number): void => {
    c[at] = PCI_CAP_ID_VNDR;
    c[at + 1] = next;
    c[at + 2] = len;
    c[at + 3] = type;
    c[at + 4] = bar;
    dv.setUint32(at + 8, offset, true);
    dv.setUint32(at + 12, length, true);
  };
  cap(0x84, 0x70, 20, VIRTIO_PCI_CAP_NOTIFY_CFG, 4, 0x3000, 0x1000);
  dv.setUint32(0x84 + 16, 4, true);
  cap(0x70, 0x60, 16, VIRTIO_PCI_CAP_DEVICE_CFG, 4, 0x2000, 0x1000);
  cap(0x60, 0x50, 16, VIRTIO_PCI_CAP_ISR_CFG, 4, 0x1000, 0x1000);
  cap(0x50, 0x40, 16, VIRTIO_PCI_CAP_COMMON_CFG, 4, 0, 0x1000);
  c[0x40] = 0x11; // MSI-X, last in the list
  c[0x41] = 0;
  return c;
}

export const pciCapsTarget: FuzzTarget = {
  name: 'pci-caps',
  description: 'virtio PCI capability list and structures from a 256-byte config space (4.1.4)',
  focus: ['kernel/pci/capabilities.ts', 'kernel/transport/pci-virtio-caps.ts'],
  maxInputBytes: CONFIG_BYTES,
  dictionary: [new Uint8Array([PCI_CAP_ID_VNDR]), new Uint8Array([0x10]), new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3]), new Uint8Array([4]), new Uint8Array([5])],
  seeds() {
    const base = qemuLike();
    const loop = qemuLike();
    loop[0x41] = 0x84; // the MSI-X capability points back at the first
    const noNotify = qemuLike();
    noNotify[0x84 + 3] = 9;
    return [base, loop, noNotify, new Uint8Array(0)];
  },
  run,
};
