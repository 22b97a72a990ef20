// The webserver on both of our drivers in one process: files through the virtio-fs
// driver (device in a worker serving appliance/site), connections through the vsock
// driver (device in the same thread), requests from the vsock device's host API.
// Each transport has its own memory here, so a file byte is copied once on its way
// (by the fs driver into the vsock body buffers, or by the vsock driver out of the
// fs loan buffers); in a guest where both share one DMA arena, neither copies.
import test from 'ava';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VirtioFsDriver } from '../drivers/virtio-fs/driver/index.js';
import { VsockDevice } from '../drivers/virtio-vsock/device/vsock-device.js';
import { VsockDriver } from '../drivers/virtio-vsock/index.js';
import { InProcessTransport } from '../kernel/transport/inprocess.js';
import { HttpResponseReader } from '../appliance/webserver/client/http-response-reader.js';
import { runWebserver } from '../appliance/webserver/run-guest.js';
import { VirtioFsSiteFiles } from '../appliance/webserver/files/virtio-fs-site-files.js';
import { vsockBufferAllocator, vsockListen } from '../appliance/webserver/listen/vsock-adapters.js';

const SITE = fileURLToPath(new URL('../../appliance/site/', import.meta.url));
const FS_DEVICE = new URL('../drivers/virtio-fs/device/worker-device.js', import.meta.url);

function siteFiles(dir = SITE, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) siteFiles(p, out);
    else out.push('/' + relative(SITE, p).split('\\').join('/'));
  }
  return out;
}

async function setup(t: import('ava').ExecutionContext) {
  const vdev = new VsockDevice({ guestCid: 3 });
  const vtr = InProcessTransport.sameThread(vdev, { memoryBytes: 48 << 20 });
  const vsock = await VsockDriver.start(vtr);
  const ftr = await InProcessTransport.worker({ module: FS_DEVICE, options: { root: SITE, tag: 'site' } }, { memoryBytes: 32 << 20 });
  const fs = await VirtioFsDriver.start(ftr);
  t.teardown(async () => {
    vsock.close();
    await vtr.close();
    try {
      await fs.close();
    } finally {
      await ftr.close();
    }
  });
  return { vdev, vsock, fs, ftr };
}

for (const mode of ['pooled', 'loaned'] as const) {
  test(`every site file through virtio-fs and vsock, byte-identical (${mode} body buffers)`, async (t) => {
    const { vdev, vsock, fs, ftr } = await setup(t);
    const files = new VirtioFsSiteFiles(fs, mode === 'loaned' ? { loanAllocator: { alloc: (n) => ftr.dma.allocate(n, 4096), free: (b) => ftr.dma.free(b) } } : {});
    const web = await runWebserver({ listen: vsockListen(vsock), files, port: 80, cache: false, bufferAllocator: vsockBufferAllocator(vsock) });
    t.teardown(() => web.close());
    const socket = await vdev.host.connect(80);
    t.teardown(() => socket.destroy());
    const reader = new HttpResponseReader(socket);
    for (let round = 0; round < 3; round++) {
      for (const f of siteFiles()) {
        socket.write(`GET ${f} HTTP/1.1\r\nHost: g\r\n\r\n`);
        const r = await reader.next();
        t.is(r.status, 200, f);
        if (!r.body.equals(readFileSync(join(SITE, f)))) t.fail(`${f} differs`);
      }
    }
    socket.write('GET /docs HTTP/1.1\r\nHost: g\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: g\r\n\r\nGET /nope HTTP/1.1\r\nHost: g\r\n\r\n');
    t.is((await reader.next()).status, 301);
    t.true((await reader.next()).body.equals(readFileSync(join(SITE, 'docs/index.html'))));
    t.is((await reader.next()).status, 404);
    if (mode === 'loaned') {
      t.true(web.server.stats.loanedChunks > 0);
      t.true(fs.stats.zeroCopyReads > 0, 'FUSE READs landed in the loan buffers without a copy');
      while (files.loansOutstanding > 0) await new Promise((r) => setImmediate(r));
      t.is(files.loansOutstanding, 0);
    } else {
      t.is(web.server.stats.loanedChunks, 0);
      t.true(web.server.stats.pooledChunks > 0);
      t.true(vsock.stats.txZeroCopyBytes >= 3 * 133 * 1024, 'the vsock driver sent the body buffers without a copy');
    }
  });
}
