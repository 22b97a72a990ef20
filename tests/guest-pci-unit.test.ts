// Host-side tests of the guest PCI layer, no QEMU: sysfs parsers, the capability walk,
// the virtio capability parser, pagemap decoding, and the modern PCI transport's
// register layout against a fake sysfs device whose BAR is a plain file (mmap of a
// regular file stands in for resource4: registers then read back what was written).
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { walkCapabilities } from '../kernel/pci/capabilities.js';
import { listPciDevices, findPciDevices } from '../kernel/pci/devices.js';
import { PciError } from '../kernel/pci/errors.js';
import { PciFunction } from '../kernel/pci/pci-function.js';
import { parseHexId, parsePciAddress, parseResourceFile, parseUioName } from '../kernel/pci/sysfs-parse.js';
import { decodePagemapEntry, PagemapError } from '../kernel/guest/pagemap.js';
import { hugepagePhysicalAddresses, HugepageDmaError } from '../kernel/guest/hugepage-dma.js';
import { DmaArena } from '../kernel/memory/dma.js';
import { parseVirtioCaps } from '../kernel/transport/pci-virtio-caps.js';
import { PciModernTransport, VirtioPciError } from '../kernel/transport/pci-modern.js';
import { addonAvailable } from '../kernel/native/index.js';
import { STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK } from '../kernel/transport/virtio-transport.js';

// ---- parsers

test('parseHexId accepts sysfs id files and rejects anything else', (t) => {
  t.is(parseHexId('0x1af4\n', 4, 'vendor'), 0x1af4);
  t.is(parseHexId('0x00ff00\n', 6, 'class'), 0xff00);
  for (const bad of ['1af4\n', '0x1af\n', '0x1af4 \n', '0x1AG4\n', '', '0x1af4\n\n']) {
    const e = t.throws(() => parseHexId(bad, 4, 'vendor'), { instanceOf: PciError });
    t.is(e?.code, 'ERR_PCI_SYSFS_FORMAT');
    t.regex(e!.message, /vendor: expected "0x" and 4 hex digits/);
  }
});

test('parsePciAddress and parseUioName', (t) => {
  t.deepEqual(parsePciAddress('0000:00:03.0'), { domain: 0, bus: 0, device: 3, fn: 0 });
  t.deepEqual(parsePciAddress('0001:1f:1f.7'), { domain: 1, bus: 0x1f, device: 31, fn: 7 });
  for (const bad of ['00:03.0', '0000:00:20.0', '0000:00:03.8', '0000:00:03.0\n']) t.throws(() => parsePciAddress(bad), { instanceOf: PciError });
  t.is(parseUioName('uio12'), 12);
  t.throws(() => parseUioName('uio'), { instanceOf: PciError });
  t.throws(() => parseUioName('../uio0'), { instanceOf: PciError });
});

const RESOURCE = [
  '0x0000000000000000 0x0000000000000000 0x0000000000000000',
  '0x00000000fea00000 0x00000000fea00fff 0x0000000000040200',
  '0x0000000000000000 0x0000000000000000 0x0000000000000000',
  '0x0000000000000000 0x0000000000000000 0x0000000000000000',
  '0x0000000000000000 0x0000000000003fff 0x000000000014220c',
  '0x000000000000c000 0x000000000000c01f 0x0000000000040101',
  '0x0000000000000000 0x0000000000000000 0x0000000000000000',
].join('\n') + '\n';

test('parseResourceFile reads BAR sizes and kinds', (t) => {
  const r = parseResourceFile(RESOURCE);
  t.is(r.length, 7);
  t.is(r[0]!.size, 0);
  t.is(r[1]!.size, 4096);
  t.true(r[1]!.isMemory);
  t.is(r[4]!.size, 0x4000);
  t.true(r[4]!.isMemory);
  t.true(r[5]!.isIo);
  t.throws(() => parseResourceFile('0x0 0x1 0x2\n'), { instanceOf: PciError, message: /line 0: expected three 0x%016x numbers/ });
  t.throws(() => parseResourceFile('0x0000000000002000 0x0000000000001000 0x0000000000000200\n'), { message: /end 0x1000 is below start 0x2000/ });
  t.throws(() => parseResourceFile(''), { message: /empty/ });
});

// ---- a QEMU-like virtio-rng config space

const COMMON = 1;
const NOTIFY = 2;
const ISR = 3;
const DEVICE = 4;

function virtioConfig(opts: { loop?: boolean; omitNotify?: boolean; notifyMultiplier?: number } = {}): Buffer {
  const c = Buffer.alloc(256);
  c.writeUInt16LE(0x1af4, 0);
  c.writeUInt16LE(0x1044, 2);
  c.writeUInt16LE(0x0010, 6); // status: capabilities list
  c[0x34] = 0x98; // first: MSI-X (skipped by the virtio parser)
  const vcap = (at: number, next: number, type: number, bar: number, offset: number, length: number, len = 16): void => {
    c[at] = 0x09;
    c[at + 1] = next;
    c[at + 2] = len;
    c[at + 3] = type;
    c[at + 4] = bar;
    c.writeUInt32LE(offset, at + 8);
    c.writeUInt32LE(length, at + 12);
  };
  c[0x98] = 0x11;
  c[0x99] = 0x84;
  vcap(0x84, 0x70, COMMON, 4, 0x0000, 0x1000);
  if (opts.omitNotify) vcap(0x70, 0x60, 9 /* vendor type: ignored */, 4, 0x3000, 0x1000);
  else {
    vcap(0x70, 0x60, NOTIFY, 4, 0x3000, 0x1000, 20);
    c.writeUInt32LE(opts.notifyMultiplier ?? 4, 0x70 + 16);
  }
  vcap(0x60, 0x50, DEVICE, 4, 0x2000, 0x1000);
  vcap(0x50, opts.loop ? 0x84 : 0x40, ISR, 4, 0x1000, 0x1000);
  vcap(0x40, 0x00, 5 /* PCI_CFG */, 0, 0, 0, 20);
  return c;
}

test('walkCapabilities follows the list and rejects loops and bad pointers', (t) => {
  const caps = walkCapabilities(virtioConfig());
  t.deepEqual(caps.map((c) => c.offset), [0x98, 0x84, 0x70, 0x60, 0x50, 0x40]);
  t.deepEqual(caps.map((c) => c.id), [0x11, 9, 9, 9, 9, 9]);
  t.throws(() => walkCapabilities(virtioConfig({ loop: true })), { instanceOf: PciError, message: /loops/ });
  const bad = virtioConfig();
  bad[0x34] = 0x20;
  t.throws(() => walkCapabilities(bad), { message: /outside 0x40..0xfc/ });
  t.throws(() => walkCapabilities(Buffer.alloc(64)), { message: /are you root/ });
  const none = virtioConfig();
  none.writeUInt16LE(0, 6);
  t.deepEqual(walkCapabilities(none), []);
});

test('parseVirtioCaps finds the four register blocks', (t) => {
  const cfg = virtioConfig();
  const layout = parseVirtioCaps(cfg, walkCapabilities(cfg));
  t.deepEqual(layout, {
    common: { bar: 4, offset: 0, length: 0x1000 },
    notify: { bar: 4, offset: 0x3000, length: 0x1000, multiplier: 4 },
    isr: { bar: 4, offset: 0x1000, length: 0x1000 },
    device: { bar: 4, offset: 0x2000, length: 0x1000 },
  });
  const noNotify = virtioConfig({ omitNotify: true });
  t.throws(() => parseVirtioCaps(noNotify, walkCapabilities(noNotify)), { message: /no virtio notification capability/ });
  const odd = virtioConfig({ notifyMultiplier: 3 });
  t.throws(() => parseVirtioCaps(odd, walkCapabilities(odd)), { message: /not even/ });
});

test('random config spaces: the capability walk and the virtio parser return or throw PciError, never loop or crash', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 256, maxLength: 256 }), fc.boolean(), (bytes, capList) => {
      const cfg = Buffer.from(bytes);
      if (capList) cfg[6] = cfg[6]! | 0x10;
      try {
        const caps = walkCapabilities(cfg);
        if (caps.length > 48) return false;
        for (const c of caps) if (c.offset < 0x40 || c.offset > 0xfc || c.offset % 4 !== 0) return false;
        const layout = parseVirtioCaps(cfg, caps);
        return layout.notify.offset % 2 === 0 && layout.common.length >= 0x38;
      } catch (e) {
        return e instanceof PciError;
      }
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

test('random sysfs text: parsers return or throw PciError', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (text) => {
      for (const parse of [() => parseHexId(text, 4, 'vendor'), () => parsePciAddress(text), () => parseResourceFile(text), () => parseUioName(text)]) {
        try {
          parse();
        } catch (e) {
          if (!(e instanceof PciError)) return false;
        }
      }
      return true;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

// ---- pagemap

const PRESENT = 1n << 63n;

test('decodePagemapEntry: frame numbers, not present, no permission', (t) => {
  t.is(decodePagemapEntry(PRESENT | 0x1234n, 0x7f0000000000n), 0x1234);
  t.is(decodePagemapEntry(PRESENT | (1n << 55n) | 0x42n, 0n), 0x42, 'bits above 54 are flags');
  t.is(t.throws(() => decodePagemapEntry(0x1234n, 0x1000n), { instanceOf: PagemapError })?.code, 'ERR_PAGEMAP_NOT_PRESENT');
  const e = t.throws(() => decodePagemapEntry(PRESENT, 0x1000n), { instanceOf: PagemapError });
  t.is(e?.code, 'ERR_PAGEMAP_NO_PERMISSION');
  t.regex(e!.message, /CAP_SYS_ADMIN/);
});

function fakePagemap(dir: string, vaddr: bigint, frames: bigint[]): string {
  const path = join(dir, 'pagemap');
  const first = Number(vaddr / 4096n);
  const b = Buffer.alloc((first + frames.length) * 8);
  frames.forEach((f, i) => b.writeBigUInt64LE(f === 0n ? PRESENT : PRESENT | f, (first + i) * 8));
  writeFileSync(path, b);
  return path;
}

test('hugepagePhysicalAddresses checks contiguity (first and last frame of each page) and alignment', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pagemap-'));
  try {
    const va = 0x400000n;
    const frames = [...Array(1024).keys()].map((i) => BigInt(i < 512 ? 0x6200 + i : 0x5e00 + i - 512));
    t.deepEqual(hugepagePhysicalAddresses(va, 2, fakePagemap(dir, va, frames)), [0x6200000, 0x5e00000]);
    const broken = [...frames];
    broken[1023] = 0x9999n; // the second page's last 4 KiB frame is elsewhere
    const e = t.throws(() => hugepagePhysicalAddresses(va, 2, fakePagemap(dir, va, broken)), { instanceOf: HugepageDmaError });
    t.is(e?.code, 'ERR_HUGEPAGE_NOT_CONTIGUOUS');
    const misaligned = frames.map((f) => f + 1n);
    t.is(t.throws(() => hugepagePhysicalAddresses(va, 2, fakePagemap(dir, va, misaligned)), { instanceOf: HugepageDmaError })?.code, 'ERR_HUGEPAGE_ALIGNMENT');
    const hidden = frames.map(() => 0n);
    t.is(t.throws(() => hugepagePhysicalAddresses(va, 1, fakePagemap(dir, va, hidden)), { instanceOf: PagemapError })?.code, 'ERR_PAGEMAP_NO_PERMISSION');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- a fake sysfs device

function fakeSysfs(): { root: string; dev: string; bar: string } {
  const root = mkdtempSync(join(tmpdir(), 'sysfs-pci-'));
  const dev = join(root, '0000:00:01.0');
  mkdirSync(dev);
  writeFileSync(join(dev, 'vendor'), '0x1af4\n');
  writeFileSync(join(dev, 'device'), '0x1044\n');
  writeFileSync(join(dev, 'class'), '0x00ff00\n');
  writeFileSync(join(dev, 'config'), virtioConfig());
  writeFileSync(join(dev, 'resource'), RESOURCE);
  const bar = Buffer.alloc(0x4000);
  bar.writeUInt32LE(0x30000001, 0x04); // device_feature (both windows read the same here)
  bar.writeUInt16LE(2, 0x12); // num_queues
  bar.writeUInt16LE(256, 0x18); // queue_size (max)
  bar.writeUInt16LE(3, 0x1e); // queue_notify_off
  Buffer.from('0123456789abcdef').copy(bar, 0x2000); // device config
  writeFileSync(join(dev, 'resource4'), bar);
  const other = join(root, '0000:00:02.0');
  mkdirSync(other);
  writeFileSync(join(other, 'vendor'), '0x8086\n');
  writeFileSync(join(other, 'device'), '0x10d3\n');
  writeFileSync(join(other, 'class'), '0x020000\n');
  return { root, dev, bar: join(dev, 'resource4') };
}

test('listPciDevices and findPciDevices read a sysfs tree', (t) => {
  const { root } = fakeSysfs();
  try {
    const all = listPciDevices(root);
    t.deepEqual(all.map((d) => [d.address, d.vendorId, d.deviceId, d.classCode, d.driver]), [
      ['0000:00:01.0', 0x1af4, 0x1044, 0xff00, null],
      ['0000:00:02.0', 0x8086, 0x10d3, 0x020000, null],
    ]);
    t.is(findPciDevices(0x1af4, 0x1044, root).length, 1);
    t.is(findPciDevices(0x1af4, 0x1053, root).length, 0);
    writeFileSync(join(root, '0000:00:02.0', 'vendor'), 'garbage');
    t.throws(() => listPciDevices(root), { message: /0000:00:02.0\/vendor: expected "0x" and 4 hex digits, got "garbage"/ });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

const withAddon = addonAvailable() ? test : test.skip;

withAddon('the modern PCI transport writes the registers of 4.1.4.3 at the right places', async (t) => {
  const { root, dev, bar } = fakeSysfs();
  try {
    const [info] = findPciDevices(0x1af4, 0x1044, root);
    const fn = new PciFunction(info!, null);
    const dma = new DmaArena(new ArrayBuffer(1 << 20), { base: 0x1_4000_0000 });
    const tr = PciModernTransport.open(fn, { dma, interrupts: null });
    t.is(tr.deviceId, 4);
    t.is(tr.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    const cmd = readFileSync(join(dev, 'config')).readUInt16LE(4);
    t.is(cmd & 0x6, 0x6, 'memory space and bus master set');
    t.is(cmd & 0x400, 0, 'INTx not disabled');
    t.is(tr.deviceFeatures(), 0x30000001_30000001n);
    tr.negotiate((1n << 32n) | (1n << 29n));
    t.is(tr.status(), STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    t.is(tr.queueMaxSize(0), 256);
    t.is(tr.queueMaxSize(2), 0);
    tr.enableQueue(1, 64, 0x1_4000_1000, 0x1_4000_2000, 0x1_4000_3000);
    tr.driverOk();
    tr.notify(1);
    t.deepEqual(tr.readConfig(1, 6), new Uint8Array(Buffer.from('123456')));
    t.throws(() => tr.readConfig(0xffe, 4), { instanceOf: VirtioPciError });
    t.throws(() => tr.notify(0), { instanceOf: VirtioPciError, message: /not enabled/ });
    const regs = readFileSync(bar);
    t.is(regs.readUInt16LE(0x16), 1, 'queue_select');
    t.is(regs.readUInt16LE(0x18), 64, 'queue_size');
    t.is(regs.readUInt16LE(0x1c), 1, 'queue_enable');
    t.is(regs.readBigUInt64LE(0x20), 0x1_4000_1000n, 'queue_desc');
    t.is(regs.readBigUInt64LE(0x28), 0x1_4000_2000n, 'queue_driver');
    t.is(regs.readBigUInt64LE(0x30), 0x1_4000_3000n, 'queue_device');
    t.is(regs.readUInt32LE(0x08), 1, 'driver_feature_select left at the high window');
    t.is(regs.readUInt32LE(0x0c), 1, 'driver_feature high half = VERSION_1');
    t.is(regs.readUInt16LE(0x3000 + 3 * 4), 1, 'doorbell at notify offset + queue_notify_off * multiplier holds the queue index');
    t.is(regs[0x14], STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    await tr.close();
    t.is(readFileSync(bar)[0x14], 0, 'close resets the device');
    t.is(readFileSync(join(dev, 'config')).readUInt16LE(4) & 0x4, 0, 'close turns bus mastering off');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

withAddon('negotiation failures set FAILED and say why', async (t) => {
  const { root } = fakeSysfs();
  try {
    const [info] = findPciDevices(0x1af4, 0x1044, root);
    const dma = new DmaArena(new ArrayBuffer(1 << 20));
    const tr = PciModernTransport.open(new PciFunction(info!, null), { dma, interrupts: null });
    t.throws(() => tr.negotiate(1n << 33n), { instanceOf: VirtioPciError, message: /does not offer/ });
    t.is(tr.status() & STATUS_FAILED, STATUS_FAILED);
    tr.reset();
    t.throws(() => tr.negotiate(1n << 29n), { message: /VIRTIO_F_VERSION_1 must be accepted/ });
    await tr.close();
    t.throws(() => tr.deviceFeatures(), { message: /closed/ });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
