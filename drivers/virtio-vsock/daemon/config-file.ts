// --config FILE: the daemon's VMs in vhost-device-vsock's YAML layout, plus our own keys.
//
//   vms:
//     - guest_cid: 3                  # vhost-device-vsock's keys
//       socket: /tmp/vhost3.socket
//       uds_path: /tmp/vm3.vsock
//       queue_size: 256               # largest ring size offered
//       tx_buffer_size: 65536         # accepted, no effect (logged)
//       groups: group1+groupA         # sibling groups (group: works too): guests sharing one reach each other
//       forwards:                     # ours
//         - listen: 127.0.0.1:8080
//           port: 80
//       pcap: /tmp/vm3.pcap           # ours
//   log_level: info                   # ours: the daemon-wide flags
//   metrics: 127.0.0.1:9100
//   metrics_allow_remote: false
//   pcap: /tmp/all.pcap
//   pcap_snaplen: 65536
//   threads: 0                        # VM threads: N, or per-vm (0: all on the main thread)
//
// Parsed with the `yaml` package (YAML 1.2 core schema; duplicate keys refused), then
// checked strictly: unknown keys, wrong types, out-of-range values and duplicate CIDs,
// paths or listen addresses are ConfigFileErrors naming the file, line and column.
import { readFileSync, statSync } from 'node:fs';
import { LineCounter, type Node, isAlias, isMap, isScalar, isSeq, parseDocument, type Document, type YAMLMap } from 'yaml';
import { type DaemonConfig, type ForwardConfig, type VmConfig, checkMetricsHost, ignoredSettingNotice, isRingOffer, METRICS_PORT_DEFAULT_HOST, RING_OFFERS, threadsSetting } from './settings.js';
import { LOG_LEVELS, isLogLevel } from './logger.js';
import * as v from './validate.js';

/** A config file larger than this is refused before parsing. */
export const CONFIG_FILE_MAX_BYTES = 1024 * 1024;

export class ConfigFileError extends Error {
  readonly code = 'ERR_VSOCK_CONFIG';
  constructor(
    readonly path: string,
    /** 1-based; 0 when the error is about the file as a whole. */
    readonly line: number,
    readonly column: number,
    message: string,
  ) {
    super(line > 0 ? `${path}:${line}:${column}: ${message}` : `${path}: ${message}`);
    this.name = 'ConfigFileError';
  }
}

const TOP_KEYS = ['vms', 'log_level', 'metrics', 'metrics_allow_remote', 'pcap', 'pcap_snaplen', 'ring', 'threads'] as const;
const VM_KEYS = ['guest_cid', 'socket', 'uds_path', 'queue_size', 'tx_buffer_size', 'groups', 'group', 'forwards', 'pcap'] as const;
const FORWARD_KEYS = ['listen', 'port'] as const;
/** vhost-device-vsock's vsock backend, which this daemon does not have. */
const VSOCK_BACKEND_KEYS = ['forward-cid', 'forward_cid', 'forward-listen', 'forward_listen'];

/** Reads and checks FILE. Throws ConfigFileError. */
export function readConfigFile(path: string): DaemonConfig {
  let text: string;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new ConfigFileError(path, 0, 0, 'is a folder, not a file');
    if (st.size > CONFIG_FILE_MAX_BYTES) throw new ConfigFileError(path, 0, 0, `is ${st.size} bytes; a config file is at most ${CONFIG_FILE_MAX_BYTES}`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof ConfigFileError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? (e as Error).message);
    throw new ConfigFileError(path, 0, 0, `cannot read it: ${why}`);
  }
  return parseConfigText(text, path);
}

/** Checks the YAML text of a config file (`path` names it in errors). Throws ConfigFileError. */
export function parseConfigText(text: string, path: string): DaemonConfig {
  if (text.length > CONFIG_FILE_MAX_BYTES) throw new ConfigFileError(path, 0, 0, `is ${text.length} bytes; a config file is at most ${CONFIG_FILE_MAX_BYTES}`);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const err = doc.errors[0];
  if (err !== undefined) {
    const pos = err.linePos?.[0] ?? lines.linePos(err.pos[0]);
    throw new ConfigFileError(path, Math.max(pos.line, 1), pos.col, `not valid YAML: ${err.message.split('\n')[0]}`);
  }
  return new ConfigReader(path, lines, doc).read();
}

type Entries = Map<string, { key: Node; value: Node | null }>;

class ConfigReader {
  readonly notices: string[] = [];

  constructor(
    private readonly path: string,
    private readonly lines: LineCounter,
    private readonly doc: Document,
  ) {}

  read(): DaemonConfig {
    const root = this.doc.contents as Node | null;
    if (root === null || (isScalar(root) && root.value === null)) throw this.error(root, 'the file is empty: expected a mapping with vms:');
    const top = this.entries(this.mapping(root, 'the file'), TOP_KEYS, 'top-level');
    const vmsEntry = top.get('vms');
    if (vmsEntry === undefined) throw this.error(root, 'vms: is missing (a list of VMs, each with guest_cid and socket)');
    const vmNodes = this.sequence(vmsEntry.value, 'vms', vmsEntry.key);
    if (vmNodes.length === 0) throw this.error(vmsEntry.key, 'vms: the list is empty; at least one VM is needed');
    const vms: VmConfig[] = [];
    const forwards: ForwardConfig[] = [];
    const vmAt: Node[] = [];
    const forwardAt: Node[] = [];
    for (const node of vmNodes) {
      const { vm, fwds } = this.vm(node);
      vms.push(vm);
      vmAt.push(node);
      for (const f of fwds) {
        forwards.push(f.forward);
        forwardAt.push(f.node);
      }
    }
    this.crossCheck(vms, vmAt, forwards, forwardAt);
    const config: DaemonConfig = { vms, forwards };
    const level = top.get('log_level');
    if (level !== undefined) {
      const s = this.string(level.value, 'log_level', level.key);
      if (!isLogLevel(s)) throw this.error(level.value, `log_level: ${JSON.stringify(s)} is not one of ${LOG_LEVELS.join(', ')}`);
      config.logLevel = s;
    }
    const ring = top.get('ring');
    if (ring !== undefined) {
      const s = this.string(ring.value, 'ring', ring.key);
      if (!isRingOffer(s)) throw this.error(ring.value, `ring: ${JSON.stringify(s)} is not one of ${RING_OFFERS.join(', ')}`);
      config.ring = s;
    }
    const threads = top.get('threads');
    if (threads !== undefined) {
      const n = this.scalar(threads.value);
      config.threads = this.check(threads.value, 'threads', () => threadsSetting(typeof n === 'number' ? String(n) : this.string(threads.value, 'threads', threads.key), 'value'));
    }
    const metrics = top.get('metrics');
    const allowRemote = top.get('metrics_allow_remote');
    if (metrics !== undefined) {
      const n = this.scalar(metrics.value);
      const addr =
        typeof n === 'number'
          ? { host: METRICS_PORT_DEFAULT_HOST, port: this.check(metrics.value, 'metrics', () => v.inRange(n, 'port', 0, 65535)) }
          : this.check(metrics.value, 'metrics', () => v.listenAddress(this.string(metrics.value, 'metrics', metrics.key), 'address', 'port', 0));
      config.metrics = { ...addr, allowRemote: allowRemote !== undefined ? this.boolean(allowRemote.value, 'metrics_allow_remote', allowRemote.key) : false };
      this.check(metrics.value, 'metrics', () => checkMetricsHost(config.metrics!, 'metrics_allow_remote: true'));
    } else if (allowRemote !== undefined) throw this.error(allowRemote.key, 'metrics_allow_remote: only with metrics:');
    const pcap = top.get('pcap');
    if (pcap !== undefined) config.pcapPath = this.check(pcap.value, 'pcap', () => v.filePath(this.string(pcap.value, 'pcap', pcap.key), 'path'));
    const snap = top.get('pcap_snaplen');
    if (snap !== undefined) {
      if (pcap === undefined && !vms.some((vm) => vm.pcapPath !== undefined)) throw this.error(snap.key, 'pcap_snaplen: nothing is captured (no pcap: here or in a VM)');
      config.pcapSnaplen = this.check(snap.value, 'pcap_snaplen', () => v.payloadCap(this.integer(snap.value, 'pcap_snaplen', snap.key), 'payload bytes'));
    }
    if (this.notices.length > 0) config.notices = this.notices;
    return config;
  }

  private vm(node: Node): { vm: VmConfig; fwds: Array<{ forward: ForwardConfig; node: Node }> } {
    const e = this.entries(this.mapping(node, 'a VM (an item of vms:)'), VM_KEYS, 'VM');
    const need = (key: string): { key: Node; value: Node | null } => {
      const x = e.get(key);
      if (x === undefined) throw this.error(node, `this VM has no ${key}`);
      return x;
    };
    const c = need('guest_cid');
    const guestCid = this.check(c.value, 'guest_cid', () => v.cid(this.integer(c.value, 'guest_cid', c.key), 'guest_cid'));
    const s = need('socket');
    const vm: VmConfig = { guestCid, socketPath: this.check(s.value, 'socket', () => v.socketPath(this.string(s.value, 'socket', s.key), 'the path')), udsPath: null };
    const u = e.get('uds_path');
    if (u !== undefined) {
      vm.udsPath = this.check(u.value, 'uds_path', () => v.socketPath(this.string(u.value, 'uds_path', u.key), 'the path', v.UDS_PATH_MAX_BYTES));
      if (vm.udsPath === vm.socketPath) throw this.error(u.value, 'uds_path: the same path as socket');
    }
    const q = e.get('queue_size');
    if (q !== undefined) vm.maxQueueSize = this.check(q.value, 'queue_size', () => v.queueSize(this.integer(q.value, 'queue_size', q.key), 'size'));
    const tx = e.get('tx_buffer_size');
    if (tx !== undefined) {
      const n = this.check(tx.value, 'tx_buffer_size', () => v.inRange(this.integer(tx.value, 'tx_buffer_size', tx.key), 'size', 1, 0xffffffff));
      this.notices.push(`${this.where(tx.key)}: ${ignoredSettingNotice(guestCid, 'tx_buffer_size', String(n))}`);
    }
    const g1 = e.get('group');
    const g = e.get('groups') ?? g1;
    if (g1 !== undefined && g !== g1) throw this.error(g1.key, 'group and groups are the same key (names joined by +); give one');
    if (g !== undefined) {
      const key = g === g1 ? 'group' : 'groups';
      vm.groups = this.check(g.value, key, () => v.groups(this.string(g.value, key, g.key), key));
    }
    const p = e.get('pcap');
    if (p !== undefined) vm.pcapPath = this.check(p.value, 'pcap', () => v.filePath(this.string(p.value, 'pcap', p.key), 'path'));
    const fwds: Array<{ forward: ForwardConfig; node: Node }> = [];
    const f = e.get('forwards');
    if (f !== undefined) {
      for (const item of this.sequence(f.value, 'forwards', f.key)) {
        const fe = this.entries(this.mapping(item, 'a forward (an item of forwards:)'), FORWARD_KEYS, 'forward');
        const l = fe.get('listen');
        if (l === undefined) throw this.error(item, 'this forward has no listen (HOST:PORT)');
        const gp = fe.get('port');
        if (gp === undefined) throw this.error(item, 'this forward has no port (the guest port)');
        const listen = this.check(l.value, 'listen', () => {
          if (typeof this.scalar(l.value) === 'number') throw new v.ValueError(`expected HOST:PORT (e.g. 127.0.0.1:${String(this.scalar(l.value))}), got a number`);
          return v.listenAddress(this.string(l.value, 'listen', l.key), 'address', 'port');
        });
        const guestPort = this.check(gp.value, 'port', () => v.inRange(this.integer(gp.value, 'port', gp.key), 'guest port', 0, v.GUEST_PORT_MAX));
        fwds.push({ forward: { listenHost: listen.host, listenPort: listen.port, guestCid, guestPort }, node: item });
      }
    }
    return { vm, fwds };
  }

  private crossCheck(vms: VmConfig[], vmAt: Node[], forwards: ForwardConfig[], forwardAt: Node[]): void {
    const dupCid = v.firstDuplicate(vms, (vm) => vm.guestCid);
    if (dupCid) throw this.error(vmAt[dupCid[1]]!, `guest_cid ${vms[dupCid[1]]!.guestCid} is also the guest_cid of the VM at line ${this.lineOf(vmAt[dupCid[0]]!)}`);
    const paths = vms.flatMap((vm, i) => [
      { path: vm.socketPath, at: vmAt[i]! },
      { path: vm.udsPath, at: vmAt[i]! },
    ]);
    const dupPath = v.firstDuplicate(paths, (p) => p.path);
    if (dupPath) throw this.error(paths[dupPath[1]]!.at, `path ${paths[dupPath[1]]!.path} is also used by the VM at line ${this.lineOf(paths[dupPath[0]]!.at)}`);
    const dupListen = v.firstDuplicate(forwards, (f) => `${f.listenHost}|${f.listenPort}`);
    if (dupListen) {
      const f = forwards[dupListen[1]]!;
      throw this.error(forwardAt[dupListen[1]]!, `listen ${f.listenHost}:${f.listenPort} is also forwarded at line ${this.lineOf(forwardAt[dupListen[0]]!)}`);
    }
  }

  // ---- nodes and positions -------------------------------------------------------------

  private resolve(node: Node | null): Node | null {
    if (node !== null && isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return node;
  }

  private lineOf(node: Node | null): number {
    return this.pos(node).line;
  }

  private pos(node: Node | null): { line: number; col: number } {
    const offset = node?.range?.[0] ?? 0;
    const p = this.lines.linePos(offset);
    return { line: Math.max(p.line, 1), col: p.col };
  }

  private where(node: Node | null): string {
    const p = this.pos(node);
    return `${this.path}:${p.line}`;
  }

  private error(node: Node | null, message: string): ConfigFileError {
    const p = this.pos(node);
    return new ConfigFileError(this.path, p.line, p.col, message);
  }

  /** Runs a value check, turning its ValueError into a ConfigFileError at `node`. */
  private check<T>(node: Node | null, key: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      if (e instanceof v.ValueError) throw this.error(node, `${key}: ${e.message}`);
      throw e;
    }
  }

  private describe(node: Node | null): string {
    const n = this.resolve(node);
    if (n === null) return 'nothing';
    if (isMap(n)) return 'a mapping';
    if (isSeq(n)) return 'a list';
    if (isScalar(n)) {
      const x = n.value;
      if (x === null) return 'nothing (null)';
      if (typeof x === 'string') return `the string ${JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}...` : x)}`;
      if (typeof x === 'number') return `the number ${x}`;
      if (typeof x === 'boolean') return `the boolean ${x}`;
      return `a ${typeof x}`;
    }
    return 'something else';
  }

  private scalar(node: Node | null): unknown {
    const n = this.resolve(node);
    return n !== null && isScalar(n) ? n.value : undefined;
  }

  /** Keys of a mapping (each a plain string) checked against `known`. */
  private entries(map: YAMLMap, known: readonly string[], what: string): Entries {
    const out: Entries = new Map();
    for (const pair of map.items) {
      const keyNode = pair.key as Node | null;
      const key = this.scalar(keyNode);
      if (typeof key !== 'string') throw this.error(keyNode, `a ${what} key must be a plain name, got ${this.describe(keyNode)}`);
      if (!known.includes(key)) {
        if (VSOCK_BACKEND_KEYS.includes(key)) {
          throw this.error(keyNode, `${key}: vhost-device-vsock's vsock backend (forward-cid, forward-listen) is not offered here; give uds_path (the hybrid Unix socket) and forwards`);
        }
        throw this.error(keyNode, `unknown ${what} key ${JSON.stringify(key)} (known: ${known.join(', ')})`);
      }
      out.set(key, { key: keyNode!, value: this.resolve(pair.value as Node | null) });
    }
    return out;
  }

  private mapping(node: Node | null, what: string): YAMLMap {
    const n = this.resolve(node);
    if (n === null || !isMap(n)) throw this.error(node, `${what}: expected a mapping (key: value lines), got ${this.describe(node)}`);
    return n;
  }

  private sequence(node: Node | null, key: string, keyNode: Node): Node[] {
    const n = this.resolve(node);
    if (n === null || !isSeq(n)) throw this.error(node ?? keyNode, `${key}: expected a list ("- " items), got ${this.describe(node)}`);
    return n.items as Node[];
  }

  private integer(node: Node | null, key: string, keyNode: Node): number {
    const x = this.scalar(node);
    if (typeof x !== 'number' || !Number.isInteger(x)) throw this.error(node ?? keyNode, `${key}: expected an integer, got ${this.describe(node)}`);
    return x;
  }

  private string(node: Node | null, key: string, keyNode: Node): string {
    const x = this.scalar(node);
    if (typeof x !== 'string') throw this.error(node ?? keyNode, `${key}: expected a string, got ${this.describe(node)}`);
    return x;
  }

  private boolean(node: Node | null, key: string, keyNode: Node): boolean {
    const x = this.scalar(node);
    if (typeof x !== 'boolean') throw this.error(node ?? keyNode, `${key}: expected true or false, got ${this.describe(node)}`);
    return x;
  }
}
