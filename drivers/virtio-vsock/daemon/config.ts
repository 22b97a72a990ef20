// Command line of the vhost-user-vsock daemon: parsing and validation into a
// DaemonConfig. Every refusal is a CliUsageError naming the flag and the reason (the
// CLI prints it and exits with status 2); a bad --config file is a ConfigFileError
// naming the file and line (config-file.ts).
import { readConfigFile } from './config-file.js';
import { LOG_LEVELS, isLogLevel } from './logger.js';
import { PCAP_MAX_PAYLOAD_BYTES } from './pcap-capture.js';
import { type DaemonConfig, type ForwardConfig, type VmConfig, METRICS_PORT_DEFAULT_HOST, RING_OFFERS, THREADS_MAX, checkMetricsHost, ignoredSettingNotice, isRingOffer, threadsSetting } from './settings.js';
import * as v from './validate.js';

export type { DaemonConfig, ForwardConfig, MetricsConfig, VmConfig } from './settings.js';
export { UNIX_PATH_MAX_BYTES } from './validate.js';

export type ParsedArgs = { help: true } | { help: false; config: DaemonConfig };

export class CliUsageError extends Error {
  readonly code = 'ERR_VSOCK_CLI_USAGE';
  constructor(
    /** The flag at fault ("--vm", "--forward", or the unknown argument). */
    readonly flag: string,
    message: string,
  ) {
    super(message);
    this.name = 'CliUsageError';
  }
}


export const HELP_TEXT = `Usage: vhost-user-vsock --vm guest-cid=CID,socket=PATH[,uds-path=PATH][,pcap=FILE] [--vm ...] [--forward ...]
       vhost-user-vsock --config FILE
       [--log-level LEVEL] [--metrics [HOST:]PORT [--metrics-allow-remote]] [--pcap FILE [--pcap-snaplen BYTES]]
       [--ring auto|split] [--threads N|per-vm]

A virtio-vsock device for QEMU guests, served over vhost-user (QEMU:
-chardev socket,id=c0,path=PATH -device vhost-user-vsock-pci,chardev=c0, with guest
RAM shared: -object memory-backend-memfd,id=mem,size=...,share=on -machine memory-backend=mem).

Options:
  --vm guest-cid=CID,socket=PATH[,uds-path=PATH][,pcap=FILE][,queue-size=N][,group=NAME[+NAME...]]
        One guest (repeatable, at least one).
          guest-cid  the guest's vsock CID, ${v.CID_MIN}..${v.CID_MAX}, unique per daemon.
          socket     Unix socket path where QEMU connects (vhost-user back end).
          uds-path   optional hybrid vsock socket (Firecracker convention): a host
                     program connects to PATH, writes "CONNECT <port>\\n", gets
                     "OK <host_port>\\n" and then a byte stream to that guest port; a
                     guest connecting to host CID 2, port P reaches the Unix socket
                     listening at PATH_P (RST when nothing listens there). While the
                     VM is not attached (QEMU not connected, or the guest's driver not
                     started) CONNECT gets "ERR ENOTCONN ..." at once. A socket file
                     left at PATH by a daemon that died is removed at start; a path
                     where a process listens, or that is not a socket, is refused.
          pcap       capture this VM's packets to FILE (instead of --pcap).
          queue-size largest ring size offered, a power of 2 (default 256).
          group      sibling groups, names joined by + (groups= as vhost-device-vsock
                     spells it works too): this guest reaches the CID of every other
                     --vm that shares a group with it (stream and SEQPACKET, the
                     guests' own credit, SHUTDOWN and RST passed through). Without it
                     the guest reaches only the host. A REQUEST to a CID that is
                     absent, not running, or in no shared group gets RST at once.
          tx-buffer-size  accepted as vhost-device-vsock does; no effect here (the
                     window per connection is 256 KiB).
        Paths must be at most ${v.UNIX_PATH_MAX_BYTES} bytes (uds-path: ${v.UDS_PATH_MAX_BYTES}, to leave room for _P).
  --forward HOST:PORT=CID:GUEST_PORT
        Listen on TCP HOST:PORT (IPv6 as [::1]:PORT) and forward each connection to
        the guest CID's vsock port GUEST_PORT (repeatable). CID must be one of the
        --vm guests. Half-close is passed on both ways. While the VM is not attached,
        a client is reset at once.
  --config FILE
        Read the VMs from a YAML file in vhost-device-vsock's layout (instead of --vm
        and --forward):
          vms:
            - guest_cid: 3
              socket: /tmp/vhost3.socket
              uds_path: /tmp/vm3.vsock
              forwards:                    # ours: TCP forwards to this guest
                - listen: 127.0.0.1:8080
                  port: 80
              pcap: /tmp/vm3.pcap          # ours: this VM's capture
          log_level: info                  # ours, as the flags below
          metrics: 127.0.0.1:9100
          metrics_allow_remote: false
          pcap: /tmp/all.pcap
          pcap_snaplen: 65536
          ring: auto
          threads: 0
        Per VM also queue_size, tx_buffer_size, groups (as in --vm). Flags given with
        --config override the file's log_level, metrics, pcap, pcap_snaplen, ring and threads.
        Errors name the file and line.
  --log-level error|warn|info|debug
        Lines below the level are not written (default info). Each line has the time,
        the level and the VM ([cid N], or [daemon]); debug adds every connection's
        REQUEST, RESPONSE, SHUTDOWN and RST with its ports, and each vhost-user message.
  --metrics [HOST:]PORT
        Serve Prometheus metrics at http://HOST:PORT/metrics (HOST defaults to
        ${METRICS_PORT_DEFAULT_HOST}; PORT 0 picks a free one, logged). Only loopback
        addresses unless --metrics-allow-remote: the metrics have no access control.
  --metrics-allow-remote
        Allow a --metrics HOST that other machines can reach (a warning is logged).
  --pcap FILE
        Capture every packet of every VM (both directions) to FILE, truncated first,
        in pcap format, link type 271 (LINKTYPE_VSOCK, as Linux's vsockmon: tshark -r
        FILE). Each packet is written before the device moves on, so a crash of the
        daemon loses nothing captured. A write error (disk full) stops the capture
        with an error line; the VMs are served on.
  --pcap-snaplen BYTES
        Payload bytes kept per captured packet, 0..${PCAP_MAX_PAYLOAD_BYTES} (headers always kept;
        default all).
  --ring auto|split
        auto (default): offer the packed ring layout (VIRTIO_F_RING_PACKED, virtio 1.2
        2.8) beside the split one; the guest's driver chooses, and QEMU passes the
        offer on only with packed=on on the device (-device vhost-user-vsock-pci,
        chardev=c0,packed=on). split: offer split rings only.
  --threads N|per-vm
        Where the VMs run. 0 (default): every VM on one event loop, the main thread's.
        N (1..${THREADS_MAX}): the VMs spread over N worker threads, each with an event loop
        of its own, so that the daemon can use more than one CPU; per-vm: a thread per
        VM. VMs that share a sibling group or a capture file share a thread; a single
        VM always runs on the main thread. Each thread costs about 12 MB of memory (a
        V8 heap of its own). Logs and /metrics are the same either way (metrics add a
        thread label to nodejs_eventloop_time_seconds_total).
  --help, -h
        Print this text and exit.

Flags take their value as the next argument or after "=" (--vm=guest-cid=3,...).
Bad flags are reported with the flag and the reason; the exit status is then 2.
`;

const VM_KEYS = ['guest-cid', 'socket', 'uds-path', 'pcap', 'queue-size', 'tx-buffer-size', 'group', 'groups'] as const;

/** Runs a check, turning its ValueError into a CliUsageError of `flag`. */
function checked<T>(flag: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof v.ValueError) throw new CliUsageError(flag, `${flag}: ${e.message}`);
    throw e;
  }
}


export function parseVm(value: string, notices: string[] = []): VmConfig {
  const flag = '--vm';
  if (value.trim() === '') throw new CliUsageError(flag, `${flag}: empty value (expected guest-cid=CID,socket=PATH[,uds-path=PATH])`);
  const seen = new Map<string, string>();
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new CliUsageError(flag, `${flag}: ${JSON.stringify(part)} is not key=value (keys: ${VM_KEYS.join(', ')})`);
    const key = part.slice(0, eq);
    const val = part.slice(eq + 1);
    if (!(VM_KEYS as readonly string[]).includes(key)) throw new CliUsageError(flag, `${flag}: unknown key ${JSON.stringify(key)} (keys: ${VM_KEYS.join(', ')})`);
    if (seen.has(key)) throw new CliUsageError(flag, `${flag}: ${key} given twice`);
    seen.set(key, val);
  }
  const cidText = seen.get('guest-cid');
  if (cidText === undefined) throw new CliUsageError(flag, `${flag}: guest-cid is missing`);
  const socketPath = seen.get('socket');
  if (socketPath === undefined) throw new CliUsageError(flag, `${flag}: socket is missing`);
  return checked(flag, () => {
    const vm: VmConfig = { guestCid: v.cidText(cidText, 'guest-cid'), socketPath: v.socketPath(socketPath, 'socket'), udsPath: null };
    const uds = seen.get('uds-path');
    if (uds !== undefined) vm.udsPath = v.socketPath(uds, 'uds-path', v.UDS_PATH_MAX_BYTES);
    if (vm.udsPath !== null && vm.udsPath === socketPath) throw new v.ValueError('socket and uds-path are the same path');
    const pcap = seen.get('pcap');
    if (pcap !== undefined) vm.pcapPath = v.filePath(pcap, 'pcap');
    const q = seen.get('queue-size');
    if (q !== undefined) vm.maxQueueSize = v.queueSize(v.decimal(q, 'queue-size', 1, v.QUEUE_SIZE_MAX), 'queue-size');
    const tx = seen.get('tx-buffer-size');
    if (tx !== undefined) notices.push(ignoredSettingNotice(vm.guestCid, 'tx-buffer-size', String(v.decimal(tx, 'tx-buffer-size', 1, 0xffffffff))));
    if (seen.has('group') && seen.has('groups')) throw new v.ValueError('group and groups are the same key (names joined by +); give one');
    const key = seen.has('group') ? 'group' : 'groups';
    const g = seen.get(key);
    if (g !== undefined) vm.groups = v.groups(g, key);
    return vm;
  });
}

export function parseForward(value: string): ForwardConfig {
  const flag = '--forward';
  const eq = value.lastIndexOf('=');
  if (eq < 0) throw new CliUsageError(flag, `${flag}: ${JSON.stringify(value)} is not HOST:PORT=CID:GUEST_PORT`);
  const target = value.slice(eq + 1);
  return checked(flag, () => {
    const listen = v.listenAddress(value.slice(0, eq), 'listen address', 'listen port');
    const m = /^([^:]*):([^:]*)$/.exec(target);
    if (!m) throw new v.ValueError(`target ${JSON.stringify(target)} is not CID:GUEST_PORT`);
    const guestCid = v.cidText(m[1]!, 'guest CID');
    const guestPort = v.decimal(m[2]!, 'guest port', 0, v.GUEST_PORT_MAX);
    return { listenHost: listen.host, listenPort: listen.port, guestCid, guestPort };
  });
}

/** --metrics [HOST:]PORT (port 0: any free one). */
export function parseMetrics(value: string): { host: string; port: number } {
  return checked('--metrics', () => {
    if (/^\d+$/.test(value)) return { host: METRICS_PORT_DEFAULT_HOST, port: v.decimal(value, 'port', 0, 65535) };
    return v.listenAddress(value, 'address', 'port', 0);
  });
}


const FLAGS_WITH_VALUE = ['--vm', '--forward', '--config', '--log-level', '--metrics', '--pcap', '--pcap-snaplen', '--ring', '--threads'];
const BOOLEAN_FLAGS = ['--metrics-allow-remote'];

export interface ParseOptions {
  /** Reads a --config file (default: from disk). */
  readFile?: (path: string) => DaemonConfig;
}

/** Parses argv (without node and script). Throws CliUsageError, or ConfigFileError for a bad --config file. */
export function parseArgs(argv: readonly string[], opts: ParseOptions = {}): ParsedArgs {
  const vms: VmConfig[] = [];
  const forwards: ForwardConfig[] = [];
  const notices: string[] = [];
  const given = new Map<string, string>();
  let allowRemote = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return { help: true };
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg;
    if (BOOLEAN_FLAGS.includes(name)) {
      if (name !== arg) throw new CliUsageError(name, `${name}: takes no value`);
      allowRemote = true;
      continue;
    }
    if (!FLAGS_WITH_VALUE.includes(name)) {
      if (arg.startsWith('-')) throw new CliUsageError(name, `${name}: unknown flag (see --help)`);
      throw new CliUsageError(arg, `${JSON.stringify(arg)}: unexpected argument (see --help)`);
    }
    let value: string;
    if (name !== arg) value = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new CliUsageError(name, `${name}: missing value`);
      value = next;
      i++;
    }
    if (name === '--vm') vms.push(parseVm(value, notices));
    else if (name === '--forward') forwards.push(parseForward(value));
    else if (given.has(name)) throw new CliUsageError(name, `${name}: given twice`);
    else given.set(name, value);
  }

  let config: DaemonConfig;
  const file = given.get('--config');
  if (file !== undefined) {
    if (vms.length > 0 || forwards.length > 0) {
      throw new CliUsageError('--config', `--config: give the VMs either in the file or with --vm and --forward, not both`);
    }
    if (file === '') throw new CliUsageError('--config', '--config: empty path');
    config = (opts.readFile ?? readConfigFile)(file);
  } else {
    if (vms.length === 0) throw new CliUsageError('--vm', '--vm: at least one --vm is required (or --config FILE)');
    checkVmsAndForwards(vms, forwards);
    config = { vms, forwards };
    if (notices.length > 0) config.notices = notices;
  }

  const level = given.get('--log-level');
  if (level !== undefined) {
    if (!isLogLevel(level)) throw new CliUsageError('--log-level', `--log-level: ${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`);
    config.logLevel = level;
  }
  const ring = given.get('--ring');
  if (ring !== undefined) {
    if (!isRingOffer(ring)) throw new CliUsageError('--ring', `--ring: ${JSON.stringify(ring)} is not one of ${RING_OFFERS.join(', ')}`);
    config.ring = ring;
  }
  const threads = given.get('--threads');
  if (threads !== undefined) config.threads = checked('--threads', () => threadsSetting(threads, 'value'));
  const metrics = given.get('--metrics');
  if (metrics !== undefined) config.metrics = { ...parseMetrics(metrics), allowRemote: false };
  if (config.metrics && allowRemote) config.metrics.allowRemote = true;
  if (allowRemote && !config.metrics) throw new CliUsageError('--metrics-allow-remote', '--metrics-allow-remote: only with --metrics');
  if (config.metrics) checked('--metrics', () => checkMetricsHost(config.metrics!, '--metrics-allow-remote'));
  const pcap = given.get('--pcap');
  if (pcap !== undefined) config.pcapPath = checked('--pcap', () => v.filePath(pcap, 'path'));
  const snap = given.get('--pcap-snaplen');
  if (snap !== undefined) config.pcapSnaplen = checked('--pcap-snaplen', () => v.decimal(snap, 'payload bytes', 0, PCAP_MAX_PAYLOAD_BYTES));
  if (config.pcapSnaplen !== undefined && config.pcapPath === undefined && !config.vms.some((vm) => vm.pcapPath !== undefined)) {
    throw new CliUsageError('--pcap-snaplen', '--pcap-snaplen: nothing is captured (no --pcap, and no VM has pcap=)');
  }
  return { help: false, config };
}

/** Cross-checks of the --vm and --forward flags: unique CIDs, paths and listen addresses; forwards to declared CIDs. */
function checkVmsAndForwards(vms: readonly VmConfig[], forwards: readonly ForwardConfig[]): void {
  const dupCid = v.firstDuplicate(vms, (vm) => vm.guestCid);
  if (dupCid) throw new CliUsageError('--vm', `--vm: guest-cid ${vms[dupCid[1]]!.guestCid} is used by two --vm`);
  const paths = vms.flatMap((vm) => [vm.socketPath, vm.udsPath]);
  const dupPath = v.firstDuplicate(paths, (p) => p);
  if (dupPath) throw new CliUsageError('--vm', `--vm: path ${paths[dupPath[1]]} is used twice`);
  const cids = new Set(vms.map((vm) => vm.guestCid));
  for (const f of forwards) {
    if (!cids.has(f.guestCid)) throw new CliUsageError('--forward', `--forward: guest CID ${f.guestCid} is not declared by any --vm`);
  }
  const dupListen = v.firstDuplicate(forwards, (f) => `${f.listenHost}|${f.listenPort}`);
  if (dupListen) {
    const f = forwards[dupListen[1]]!;
    throw new CliUsageError('--forward', `--forward: ${f.listenHost}:${f.listenPort} is forwarded twice`);
  }
}
