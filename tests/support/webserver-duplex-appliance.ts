// The appliance inside the guest: our vsock and virtio-fs drivers on the PCI transport
// (one hugepage DMA arena shared by both, so FUSE_READ lands file bytes in the
// webserver's body buffers and those same buffers are the vsock transmit descriptors),
// the webserver on one vsock port and the ping-pong service on another.
import type { BootContext } from '../../kernel/guest/boot.js';
import { VirtioFsDriver } from '../../drivers/virtio-fs/driver/index.js';
import { VsockDriver } from '../../drivers/virtio-vsock/index.js';
import { DEFAULT_PINGPONG_PORT, runPingPong } from '../../appliance/pingpong/echo-server.js';
import { DEFAULT_WEBSERVER_PORT, runWebserver } from '../../appliance/webserver/run-guest.js';
import { VirtioFsSiteFiles } from '../../appliance/webserver/files/virtio-fs-site-files.js';
import { vsockBufferAllocator, vsockListen } from '../../appliance/webserver/listen/vsock-adapters.js';

export const VIRTIO_ID_VSOCK = 19;
export const VIRTIO_ID_FS = 26;

export interface GuestApplianceArgs {
  port: number;
  pingPongPort: number;
  /** The site's folder inside the virtio-fs share. */
  siteRoot: string;
  cache: boolean;
  log: boolean;
}

export const GUEST_APPLIANCE_USAGE = 'guest webserver flags: [--port=N] [--pingpong-port=N] [--site-root=/PATH] [--no-cache] [--log]';

/** Parses the guest's arguments (from the kernel command line); throws naming the bad flag. */
export function parseGuestApplianceArgs(argv: readonly string[]): GuestApplianceArgs {
  const a: GuestApplianceArgs = { port: DEFAULT_WEBSERVER_PORT, pingPongPort: DEFAULT_PINGPONG_PORT, siteRoot: '/', cache: true, log: false };
  const vsockPort = (flag: string, v: string): number => {
    if (!/^\d{1,10}$/.test(v) || Number(v) > 0xfffffffe) throw new Error(`${flag}: expected a vsock port, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  for (const arg of argv) {
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const v = eq < 0 ? '' : arg.slice(eq + 1);
    switch (flag) {
      case '--port':
        a.port = vsockPort(flag, v);
        break;
      case '--pingpong-port':
        a.pingPongPort = vsockPort(flag, v);
        break;
      case '--site-root':
        if (!v.startsWith('/') || v.split('/').some((s) => s === '..')) throw new Error(`${flag}: expected an absolute path inside the share, got ${JSON.stringify(v)}`);
        a.siteRoot = v;
        break;
      case '--no-cache':
        a.cache = false;
        break;
      case '--log':
        a.log = true;
        break;
      default:
        throw new Error(`unknown flag ${JSON.stringify(flag)}; ${GUEST_APPLIANCE_USAGE}`);
    }
  }
  if (a.port === a.pingPongPort) throw new Error(`--port and --pingpong-port are both ${a.port}`);
  return a;
}

export interface RunningGuestAppliance {
  readonly vsock: VsockDriver;
  readonly fs: VirtioFsDriver;
  /** Stops both services and both drivers. */
  close(): Promise<void>;
}

export async function startGuestAppliance(ctx: BootContext, args: GuestApplianceArgs): Promise<RunningGuestAppliance> {
  const vsockTransport = ctx.openVirtioDevice(VIRTIO_ID_VSOCK);
  const fsTransport = ctx.openVirtioDevice(VIRTIO_ID_FS);
  const fs = await VirtioFsDriver.start(fsTransport);
  const vsock = await VsockDriver.start(vsockTransport);
  const listen = vsockListen(vsock);
  const files = new VirtioFsSiteFiles(fs, { root: args.siteRoot });
  const web = await runWebserver({
    listen,
    files,
    port: args.port,
    cache: args.cache ? undefined : false,
    bufferAllocator: vsockBufferAllocator(vsock),
    log: args.log ? (line) => ctx.log(line) : undefined,
  });
  const pp = await runPingPong({ listen, port: args.pingPongPort });
  ctx.log(`webserver on vsock port ${web.port} (cid ${vsock.localCid}), ping-pong on ${pp.port}, site ${fs.tag}:${args.siteRoot}; rings: vsock ${vsock.ringLayout}, fs ${fs.ringLayout}`);
  return {
    vsock,
    fs,
    async close() {
      await web.close();
      await pp.close();
      vsock.close();
      await files.close(); // RELEASE of the cached file handles, while the driver still runs
      await fs.close();
    },
  };
}
