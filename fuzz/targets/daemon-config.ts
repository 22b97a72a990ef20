// The vsock daemon's configuration: its command line (drivers/virtio-vsock/daemon/
// config.ts parseArgs) and its YAML --config file (config-file.ts parseConfigText).
// The input's first byte picks the door: flags (arguments separated by NUL bytes),
// a YAML file, or flags naming --config with the file's text after a 0xff byte.
//
// Invariants: bad input is refused with CliUsageError naming the flag, or with
// ConfigFileError as "FILE:LINE:COLUMN: what" with a line and column inside the file
// (or "FILE: what" for the file as a whole); nothing else is thrown. An accepted
// configuration keeps the rules the daemon relies on: at least one VM, CIDs in
// 3..4294967294 and unique, socket paths non-empty, without NUL, within sun_path and
// unique, forwards to declared CIDs with ports in range and unique listen addresses,
// ring sizes powers of two, a known log level.
import { CliUsageError, parseArgs } from '../../drivers/virtio-vsock/daemon/config.js';
import { ConfigFileError, parseConfigText } from '../../drivers/virtio-vsock/daemon/config-file.js';
import type { DaemonConfig } from '../../drivers/virtio-vsock/daemon/settings.js';
import { LOG_LEVELS } from '../../drivers/virtio-vsock/daemon/logger.js';
import { check, utf8, type FuzzTarget } from '../engine/target.js';

const FILE = 'fuzz.yaml';
const UNIX_PATH_MAX_BYTES = 107;

function checkConfig(c: DaemonConfig, where: string): void {
  check(c.vms.length >= 1, () => `${where}: accepted with no VM`);
  const cids = new Set<number>();
  const paths = new Set<string>();
  for (const vm of c.vms) {
    check(Number.isSafeInteger(vm.guestCid) && vm.guestCid >= 3 && vm.guestCid <= 0xfffffffe, () => `${where}: guest CID ${vm.guestCid} accepted`);
    check(!cids.has(vm.guestCid), () => `${where}: guest CID ${vm.guestCid} accepted twice`);
    cids.add(vm.guestCid);
    for (const p of [vm.socketPath, vm.udsPath]) {
      if (p === null) continue;
      check(p.length > 0 && !p.includes('\0') && Buffer.byteLength(p) <= UNIX_PATH_MAX_BYTES, () => `${where}: socket path ${JSON.stringify(p)} accepted`);
      check(!paths.has(p), () => `${where}: socket path ${JSON.stringify(p)} accepted twice`);
      paths.add(p);
    }
    if (vm.maxQueueSize !== undefined) check(vm.maxQueueSize >= 1 && vm.maxQueueSize <= 32768 && (vm.maxQueueSize & (vm.maxQueueSize - 1)) === 0, () => `${where}: queue size ${vm.maxQueueSize}`);
    if (vm.pcapPath !== undefined) check(vm.pcapPath.length > 0 && !vm.pcapPath.includes('\0'), () => `${where}: pcap path ${JSON.stringify(vm.pcapPath)}`);
  }
  const listens = new Set<string>();
  for (const f of c.forwards) {
    check(cids.has(f.guestCid), () => `${where}: forward to undeclared CID ${f.guestCid}`);
    check(Number.isInteger(f.listenPort) && f.listenPort >= 1 && f.listenPort <= 65535, () => `${where}: listen port ${f.listenPort}`);
    check(Number.isInteger(f.guestPort) && f.guestPort >= 0 && f.guestPort <= 0xfffffffe, () => `${where}: guest port ${f.guestPort}`);
    const key = `${f.listenHost}|${f.listenPort}`;
    check(!listens.has(key), () => `${where}: listen address ${f.listenHost}:${f.listenPort} accepted twice`);
    listens.add(key);
  }
  if (c.logLevel !== undefined) check((LOG_LEVELS as readonly string[]).includes(c.logLevel), () => `${where}: log level ${c.logLevel}`);
  if (c.metrics !== undefined) check(Number.isInteger(c.metrics.port) && c.metrics.port >= 0 && c.metrics.port <= 65535 && c.metrics.host.length > 0, () => `${where}: metrics ${JSON.stringify(c.metrics)}`);
  if (c.pcapSnaplen !== undefined) check(Number.isInteger(c.pcapSnaplen) && c.pcapSnaplen >= 0, () => `${where}: snaplen ${c.pcapSnaplen}`);
}

function checkFileError(e: unknown, text: string): void {
  check(e instanceof ConfigFileError, () => `the config file was refused with ${(e as Error)?.name}: ${(e as Error)?.message}`);
  const lines = text.split(/\r\n|\r|\n/).length;
  if (e.line === 0) check(e.message.startsWith(`${FILE}: `), () => `file-wide error without the file's name: ${e.message}`);
  else {
    check(e.message.startsWith(`${FILE}:${e.line}:${e.column}: `), () => `error not as FILE:LINE:COLUMN: ${e.message}`);
    check(e.line >= 1 && e.line <= lines + 1 && e.column >= 1, () => `error at line ${e.line} column ${e.column} of a ${lines}-line file: ${e.message}`);
  }
  check(e.message.length > `${FILE}:${e.line}:${e.column}: `.length, () => `error without a reason: ${e.message}`);
}

function parseYaml(text: string): void {
  let c: DaemonConfig;
  try {
    c = parseConfigText(text, FILE);
  } catch (e) {
    checkFileError(e, text);
    return;
  }
  checkConfig(c, 'config file');
}

function parseFlags(argv: string[], fileText: string | null): void {
  let fileRead = false;
  let r;
  try {
    r = parseArgs(argv, {
      readFile: (path) => {
        fileRead = true;
        check(fileText !== null || path.length > 0, () => 'readFile called for an empty path');
        return parseConfigText(fileText ?? '', FILE);
      },
    });
  } catch (e) {
    if (e instanceof ConfigFileError) {
      check(fileRead, () => `ConfigFileError without a --config file: ${e.message}`);
      checkFileError(e, fileText ?? '');
      return;
    }
    check(e instanceof CliUsageError, () => `the flags were refused with ${(e as Error)?.name}: ${(e as Error)?.message}`);
    check(e.message.length > 0 && (e.message.includes(e.flag) || e.message.includes(JSON.stringify(e.flag))), () => `CliUsageError for ${JSON.stringify(e.flag)} does not name it: ${e.message}`);
    return;
  }
  if (r.help) return;
  checkConfig(r.config, 'command line');
}

function run(input: Uint8Array): void {
  const mode = input[0] ?? 0;
  const rest = Buffer.from(input.subarray(1));
  if (mode % 3 === 0) parseYaml(rest.toString('utf8'));
  else if (mode % 3 === 1) parseFlags(rest.toString('utf8').split('\0'), null);
  else {
    const cut = rest.indexOf(0xff);
    const flags = (cut < 0 ? rest : rest.subarray(0, cut)).toString('utf8').split('\0');
    parseFlags(flags, cut < 0 ? '' : rest.subarray(cut + 1).toString('utf8'));
  }
}

const yaml = (text: string): Uint8Array => new Uint8Array([0, ...Buffer.from(text)]);
const flags = (...argv: string[]): Uint8Array => new Uint8Array([1, ...Buffer.from(argv.join('\0'))]);

export const daemonConfigTarget: FuzzTarget = {
  name: 'daemon-config',
  description: 'the vsock daemon\'s flags and its YAML --config file',
  focus: ['drivers/virtio-vsock/daemon/config.ts', 'drivers/virtio-vsock/daemon/config-file.ts', 'drivers/virtio-vsock/daemon/validate.ts', 'drivers/virtio-vsock/daemon/settings.ts'],
  maxInputBytes: 2048,
  dictionary: [
    ...['--vm', '--forward', '--config', '--log-level', '--metrics', '--metrics-allow-remote', '--pcap', '--pcap-snaplen', 'guest-cid=', 'socket=', 'uds-path=', 'pcap=', 'queue-size=', 'tx-buffer-size=', 'groups=', ',', '=', ':', '127.0.0.1:', '[::1]:', '\0'].map(utf8),
    ...['vms:', '- guest_cid: ', '  socket: ', '  uds_path: ', '  queue_size: ', '  tx_buffer_size: ', '  groups: ', '  forwards:', '    - listen: ', '      port: ', '  pcap: ', 'log_level: ', 'metrics: ', 'metrics_allow_remote: true', 'pcap_snaplen: ', '\n', '  ', '- ', '{', '}', '[', ']', '&a', '*a', '<<: ', '!!str ', '0x', '"', "'", '#'].map(utf8),
  ],
  seeds() {
    return [
      yaml('vms:\n  - guest_cid: 3\n    socket: /tmp/vhost3.sock\n    uds_path: /tmp/vm3.vsock\n    queue_size: 256\n    forwards:\n      - listen: 127.0.0.1:8080\n        port: 80\nlog_level: debug\nmetrics: 9100\npcap: /tmp/all.pcap\npcap_snaplen: 64\n'),
      yaml('vms:\n  - guest_cid: 3\n    socket: /tmp/a\n  - guest_cid: 3\n    socket: /tmp/b\n'),
      yaml('vms:\n  - {guest_cid: 4, socket: /tmp/a, tx_buffer_size: 65536, groups: default}\n'),
      flags('--vm', 'guest-cid=3,socket=/tmp/vhost.sock,uds-path=/tmp/vm.vsock', '--forward', '127.0.0.1:8080=3:80', '--log-level', 'info', '--metrics', '127.0.0.1:0'),
      flags('--vm=guest-cid=5,socket=/tmp/s,pcap=/tmp/p.pcap,queue-size=64', '--pcap-snaplen', '100', '--metrics', '0.0.0.0:9100', '--metrics-allow-remote'),
      new Uint8Array([2, ...Buffer.from('--config\0fuzz.yaml\0--log-level\0warn'), 0xff, ...Buffer.from('vms:\n  - guest_cid: 7\n    socket: /tmp/x\n')]),
    ];
  },
  run,
};
