// Guest program: the virtio-fs driver (drivers/virtio-fs/driver), unchanged, on the
// virtio modern PCI transport (virtio device 26, PCI 1af4:105a, served by QEMU's
// vhost-user-fs-pci and the C virtiofsd), hugepage DMA memory and uio interrupts.
// It lists the shared folder's root, reads every regular file in it (copying, and by
// DMA chunks) and prints `virtiofs-probe-result: {json}` with sizes and SHA-256s.
import { createHash } from 'node:crypto';
import { boot } from '../../kernel/guest/boot.js';
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';

const VIRTIO_ID_FS = 26;

boot(
  'virtiofs-probe',
  async (ctx) => {
    const t = ctx.openVirtioDevice(VIRTIO_ID_FS);
    const fs = await VirtioFsDriver.start(t);
    ctx.log(`mounted tag ${fs.tag}, FUSE 7.${fs.protocolMinor}, max read ${fs.maxRead}`);
    const names = ((await fs.readdir('/')) as string[]).sort();
    const files: Record<string, { size: number; sha256: string; dmaSha256: string; readMs: number }> = {};
    for (const name of names) {
      const st = await fs.stat(`/${name}`);
      if (!st.isFile()) continue;
      const t0 = performance.now();
      const data = (await fs.readFile(`/${name}`)) as Buffer;
      const readMs = performance.now() - t0;
      const dma = await fs.readFileDma(`/${name}`);
      const h = createHash('sha256');
      for (const c of dma.chunks) h.update(c);
      dma.release();
      files[name] = { size: data.length, sha256: createHash('sha256').update(data).digest('hex'), dmaSha256: h.digest('hex'), readMs: Math.round(readMs) };
    }
    process.stdout.write(`virtiofs-probe-result: ${JSON.stringify({ tag: fs.tag, names, files, interrupts: t.interruptCount })}\n`);
    await fs.close();
    return 0;
  },
  { dmaPages: 16 },
);
