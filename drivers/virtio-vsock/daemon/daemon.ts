// The vhost-user-vsock daemon: one VsockDevice per --vm, served to QEMU over
// vhost-user, with its host ends (hybrid Unix socket, TCP forwards), and what an
// operator watches it with: a levelled log, packet capture (pcap, link type 271) and
// Prometheus metrics.
//
// INTEGRATION POINT: startDaemon() takes the vhost-user server as a factory
// (createVhostUserServer). The default, defaultVhostUserServerFactory, uses
// kernel/vhost-user (startVhostUserServer), which maps QEMU's memory and turns its kicks
// into kick() calls on the device; tests pass a fake.
import type { VirtioDeviceModel } from '../../../kernel/transport/virtio-device.js';
import type { PacketTap } from '../device/packet-tap.js';
import type { VsockMuxer } from '../device/muxer.js';
import { SiblingRouter } from '../device/sibling-router.js';
import { TURN_SHARE_ALONE, TURN_SHARE_SHARED } from '../device/constants.js';
import { VsockDevice } from '../device/vsock-device.js';
import type { HostLogLevel } from '../host/host-stats.js';
import { HybridVsockBackend } from '../host/hybrid-unix.js';
import { prepareSocketPath } from '../host/socket-path.js';
import { TcpForward, formatHostPort } from '../host/tcp-forward.js';
import type { DaemonConfig } from './config.js';
import type { EventLoopDelaySampler } from './event-loop-delay.js';
import { type DaemonLogger, type LogLevel, createLogger } from './logger.js';
import { type CaptureMetricsSource, type VmMetricsSource, loopFigures, renderMetrics } from './metrics.js';
import { type MetricsServer, serveDaemonMetrics } from './metrics-server.js';
import { PCAP_MAX_PAYLOAD_BYTES, PcapCapture, type PcapFileOps } from './pcap-capture.js';
import { ConnectionLogTap, combineTaps } from './taps.js';

export interface VhostUserServerHandle {
  close(): Promise<void>;
}

/** What a vhost-user front end did (for boot timelines): connected, or mapped guest memory (the driver set DRIVER_OK). */
export type FrontEndEvent = 'connected' | 'memory-mapped';

export type VhostUserServerFactory = (opts: {
  socketPath: string;
  model: VirtioDeviceModel;
  /** One line at a level (the daemon adds the time and the VM). */
  log: (level: LogLevel, message: string) => void;
  onFrontEnd?: (event: FrontEndEvent) => void;
}) => Promise<VhostUserServerHandle>;

/** kernel/vhost-user, loaded on first use (it needs the native addon). */
export const defaultVhostUserServerFactory: VhostUserServerFactory = async ({ socketPath, model, log, onFrontEnd }) => {
  const { startVhostUserServer } = await import('../../../kernel/vhost-user/index.js');
  if ((await prepareSocketPath(socketPath, 'vhost-user socket')) === 'stale-removed') {
    log('warn', `vhost-user: removed the stale socket ${socketPath} (nothing was listening on it)`);
  }
  let server;
  try {
    // Every line of the server and its sessions goes through `log` at its own level.
    server = await startVhostUserServer({
      socketPath,
      model,
      // The server's "client N dropped" line is replaced by the protocol-error line below;
      // its lines that start with the path get it once.
      log: (level, message) => {
        if (/^client \d+ dropped: /.test(message)) return;
        log(level, `vhost-user ${socketPath}: ${message.startsWith(`${socketPath}: `) ? message.slice(socketPath.length + 2) : message}`);
      },
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw Object.assign(new Error(`vhost-user socket ${socketPath}: cannot listen: ${err.code ?? ''}${err.code ? ' ' : ''}${err.message}`), { code: err.code ?? 'ERR_VHOST_USER_SOCKET' });
  }
  server.on('protocol-error', (err: Error & { code?: string }) => log('error', `vhost-user ${socketPath}: front end dropped: ${err.code}: ${err.message}`));
  server.on('error', () => {}); // logged by the server; without a listener it would throw
  if (onFrontEnd) {
    server.on('client-connected', () => onFrontEnd('connected'));
    server.on('memory-mapped', () => onFrontEnd('memory-mapped'));
  }
  return server;
};

export interface DaemonDeps {
  createVhostUserServer?: VhostUserServerFactory;
  /** Where log lines go, one call per line without the newline (default: stderr). */
  log?: (line: string) => void;
  /** A VM's front end (QEMU) connected or mapped guest memory. */
  onFrontEnd?: (guestCid: number, event: FrontEndEvent) => void;
  /** File operations of the capture files (tests inject write failures). */
  pcapFileOps?: PcapFileOps;
}

/** One VM as the daemon runs it. */
export interface DaemonVm {
  readonly cid: number;
  readonly device: VsockDevice;
  readonly hybrid: HybridVsockBackend | null;
  readonly forwards: readonly TcpForward[];
  /** Where its packets are captured, or null (also when the file could not be opened). */
  readonly capture: PcapCapture | null;
}

export interface RunningDaemon {
  /** The device of each guest, by CID. */
  readonly devices: ReadonlyMap<number, VsockDevice>;
  /** Each VM with its host ends and capture, by CID. */
  readonly vms: ReadonlyMap<number, DaemonVm>;
  /** The TCP forwards, in --forward order (address() gives the bound port). */
  readonly forwards: readonly TcpForward[];
  /** The capture files, by path. */
  readonly captures: ReadonlyMap<string, PcapCapture>;
  /** The metrics server, or null without --metrics. */
  readonly metrics: MetricsServer | null;
  readonly logger: DaemonLogger;
  /** The metrics text as /metrics serves it. */
  renderMetrics(): string;
  /** The figures of every VM and capture file now (live objects; plainVmMetrics copies them). */
  metricsSources(): { vms: VmMetricsSource[]; captures: CaptureMetricsSource[] };
  close(): Promise<void>;
}

/** A DaemonVm while the daemon starts (its forwards are added after every VM is up). */
interface StartingVm extends DaemonVm {
  readonly forwards: TcpForward[];
  readonly udsPath: string | null;
}

export async function startDaemon(config: DaemonConfig, deps: DaemonDeps = {}): Promise<RunningDaemon> {
  const logger = createLogger(config.logLevel ?? 'info', deps.log ?? ((line) => process.stderr.write(`${line}\n`)));
  const createServer = deps.createVhostUserServer ?? defaultVhostUserServerFactory;
  const devices = new Map<number, VsockDevice>();
  const vms = new Map<number, StartingVm>();
  const forwards: TcpForward[] = [];
  const captures = new Map<string, PcapCapture>();
  let metrics: MetricsServer | null = null;
  let loopDelay: EventLoopDelaySampler | null = null;
  const closers: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) {
      try {
        await c();
      } catch (e) {
        logger.log('error', null, `while closing: ${(e as Error).message}`);
      }
    }
  };

  /** The capture file at `path`, opened once for every VM that writes there; null when it cannot be opened (logged). */
  const captureAt = (path: string, cid: number): PcapCapture | null => {
    const open = captures.get(path);
    if (open) return open;
    try {
      const c = new PcapCapture(path, {
        ...(config.pcapSnaplen !== undefined ? { payloadCap: config.pcapSnaplen } : {}),
        ...(deps.pcapFileOps ? { fileOps: deps.pcapFileOps } : {}),
        onError: (err) => logger.log('error', null, `${err.message} (the VMs are served on)`),
      });
      captures.set(path, c);
      closers.push(async () => c.close());
      logger.log('info', null, `capturing packets to ${path} (pcap, link type 271${c.payloadCap < PCAP_MAX_PAYLOAD_BYTES ? `, ${c.payloadCap} payload bytes per packet` : ''})`);
      return c;
    } catch (e) {
      logger.log('error', cid, `${(e as Error).message}: this VM is served without capture`);
      return null;
    }
  };

  // One router for the daemon: guests of a shared group reach each other (sibling-router.ts).
  const router = new SiblingRouter<VsockMuxer>();
  try {
    for (const n of config.notices ?? []) logger.log('warn', null, n);
    for (const vm of config.vms) {
      const cid = vm.guestCid;
      const device = new VsockDevice({
        guestCid: cid,
        router,
        groups: vm.groups ?? [],
        packed: config.ring !== 'split',
        // Several VMs on this loop: shorter turns, so that a flooding VM holds the others up less.
        turnShare: config.vms.length > 1 ? TURN_SHARE_SHARED : TURN_SHARE_ALONE,
        log: (m) => logger.log('warn', cid, m),
        ...(vm.maxQueueSize !== undefined ? { maxQueueSize: vm.maxQueueSize } : {}),
        onAttachedChange: (attached) =>
          logger.log('info', cid, attached ? 'VM attached: the guest driver started the device' : 'VM detached: the device stopped (guest reset, front end gone); host connects are refused until it starts again'),
      });
      devices.set(cid, device);
      closers.push(async () => device.dispose());
      const pcapPath = vm.pcapPath ?? config.pcapPath;
      const capture = pcapPath !== undefined ? captureAt(pcapPath, cid) : null;
      const taps: PacketTap[] = [];
      if (capture) taps.push(capture);
      if (logger.enabled('debug')) taps.push(new ConnectionLogTap((line) => logger.log('debug', cid, line)));
      device.tap = combineTaps(taps);
      const hostLog = (m: string, level: HostLogLevel = 'info'): void => logger.log(level, cid, m);
      let hybrid: HybridVsockBackend | null = null;
      if (vm.udsPath !== null) {
        const h = new HybridVsockBackend({ host: device.host, udsPath: vm.udsPath, attached: () => device.attached, vmName: `guest CID ${cid}`, log: hostLog });
        await h.listen();
        hybrid = h;
        closers.push(() => h.close());
      }
      const onFrontEnd = deps.onFrontEnd;
      const server = await createServer({
        socketPath: vm.socketPath,
        model: device,
        log: (level, message) => logger.log(level, cid, message),
        ...(onFrontEnd ? { onFrontEnd: (e: FrontEndEvent) => onFrontEnd(cid, e) } : {}),
      });
      closers.push(() => server.close());
      vms.set(cid, { cid, device, hybrid, forwards: [], capture, udsPath: vm.udsPath });
      const groups = vm.groups !== undefined && vm.groups.length > 0 ? `, sibling groups ${vm.groups.join('+')}` : '';
      logger.log('info', cid, `vhost-user at ${vm.socketPath}${vm.udsPath ? `, hybrid vsock at ${vm.udsPath}` : ''}${groups}`);
    }
    for (const f of config.forwards) {
      const device = devices.get(f.guestCid)!;
      const fwd = new TcpForward({
        host: device.host,
        listenHost: f.listenHost,
        listenPort: f.listenPort,
        guestPort: f.guestPort,
        attached: () => device.attached,
        log: (m, level = 'info') => logger.log(level, f.guestCid, m),
      });
      const addr = await fwd.listen();
      forwards.push(fwd);
      vms.get(f.guestCid)!.forwards.push(fwd);
      closers.push(() => fwd.close());
      logger.log('info', f.guestCid, `forwarding ${formatHostPort(addr.address, addr.port)} -> guest port ${f.guestPort}`);
    }
    const metricsSources = (): { vms: VmMetricsSource[]; captures: CaptureMetricsSource[] } => ({
      vms: [...vms.values()].map((vm) => ({
        cid: vm.cid,
        device: vm.device,
        hybrid: vm.hybrid ? { stats: vm.hybrid.stats, listen: vm.udsPath ?? '' } : null,
        forwards: vm.forwards.map((f) => {
          const a = f.address();
          return { stats: f.stats, listen: a ? formatHostPort(a.address, a.port) : '', guestPort: f.guestPort };
        }),
      })),
      captures: [...captures.values()],
    });
    const render = (): string => {
      const { vms: sources, captures: files } = metricsSources();
      return renderMetrics(sources, files, metrics?.stats ?? null, [loopFigures('main', loopDelay)]);
    };
    if (config.metrics) {
      const endpoint = await serveDaemonMetrics(config.metrics, render, logger);
      metrics = endpoint.server;
      loopDelay = endpoint.loopDelay;
      closers.push(() => endpoint.close());
    }
    return { devices, vms, forwards, captures, metrics, logger, renderMetrics: render, metricsSources, close };
  } catch (e) {
    await close();
    throw e;
  }
}
