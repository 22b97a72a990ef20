// --config FILE (vhost-device-vsock's YAML layout plus our keys) and the daemon's new
// flags (--log-level, --metrics, --metrics-allow-remote, --pcap, --pcap-snaplen, per-VM
// pcap= and queue-size=): what they parse into, and hostile files (unknown keys, wrong
// types, duplicate CIDs, paths and keys, bad YAML, huge or missing files), each refused
// with the file, line and reason.
import test from 'ava';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../drivers/virtio-vsock/daemon/cli.js';
import { CONFIG_FILE_MAX_BYTES, ConfigFileError, parseConfigText, readConfigFile } from '../drivers/virtio-vsock/daemon/config-file.js';
import { CliUsageError, parseArgs } from '../drivers/virtio-vsock/daemon/config.js';

const VHOST_DEVICE_VSOCK_EXAMPLE = `vms:
    - guest_cid: 3
      socket: /tmp/vhost3.socket
      uds_path: /tmp/vm3.vsock
      tx_buffer_size: 65536
      queue_size: 1024
      groups: group1+groupA
    - guest_cid: 4
      socket: /tmp/vhost4.socket
      uds_path: /tmp/vm4.vsock
      tx_buffer_size: 32768
      queue_size: 256
      groups: group2+groupB
`;

test("vhost-device-vsock's own example file is accepted; groups are sibling groups, tx_buffer_size becomes a notice", (t) => {
  const c = parseConfigText(VHOST_DEVICE_VSOCK_EXAMPLE, 'vsock.yaml');
  t.deepEqual(c.vms, [
    { guestCid: 3, socketPath: '/tmp/vhost3.socket', udsPath: '/tmp/vm3.vsock', maxQueueSize: 1024, groups: ['group1', 'groupA'] },
    { guestCid: 4, socketPath: '/tmp/vhost4.socket', udsPath: '/tmp/vm4.vsock', maxQueueSize: 256, groups: ['group2', 'groupB'] },
  ]);
  t.deepEqual(c.forwards, []);
  t.is(c.notices?.length, 2);
  t.regex(c.notices![0]!, /^vsock\.yaml:5: guest CID 3: tx_buffer_size 65536 has no effect here/);
});

test('group: is groups: spelled as the --vm key; both in one VM, or a bad name, are refused with the line', (t) => {
  const c = parseConfigText('vms:\n  - guest_cid: 3\n    socket: /s\n    group: a+b+a\n', 'v.yaml');
  t.deepEqual(c.vms[0]!.groups, ['a', 'b']);
  t.throws(() => parseConfigText('vms:\n  - guest_cid: 3\n    socket: /s\n    group: a\n    groups: b\n', 'v.yaml'), { message: /v\.yaml:4.*group and groups are the same key/ });
  t.throws(() => parseConfigText(`vms:\n  - guest_cid: 3\n    socket: /s\n    group: ${'x'.repeat(65)}\n`, 'v.yaml'), { message: /v\.yaml:4.*1-64 letters/ });
});

test('our keys: forwards and pcap per VM; log_level, metrics, pcap, pcap_snaplen, ring', (t) => {
  const c = parseConfigText(
    `# a comment
vms:
  - guest_cid: 3
    socket: /run/v3.sock
    uds_path: /run/vm3.vsock
    pcap: /var/log/vm3.pcap
    forwards:
      - listen: 127.0.0.1:8080
        port: 80
      - { listen: "[::1]:8443", port: 443 }
  - guest_cid: 0x10
    socket: /run/v16.sock
log_level: debug
metrics: 9100
pcap: /var/log/all.pcap
pcap_snaplen: 128
ring: split
`,
    'x.yaml',
  );
  t.deepEqual(c, {
    vms: [
      { guestCid: 3, socketPath: '/run/v3.sock', udsPath: '/run/vm3.vsock', pcapPath: '/var/log/vm3.pcap' },
      { guestCid: 16, socketPath: '/run/v16.sock', udsPath: null },
    ],
    forwards: [
      { listenHost: '127.0.0.1', listenPort: 8080, guestCid: 3, guestPort: 80 },
      { listenHost: '::1', listenPort: 8443, guestCid: 3, guestPort: 443 },
    ],
    logLevel: 'debug',
    metrics: { host: '127.0.0.1', port: 9100, allowRemote: false },
    pcapPath: '/var/log/all.pcap',
    pcapSnaplen: 128,
    ring: 'split',
  });
  const remote = parseConfigText('vms:\n  - {guest_cid: 3, socket: /s}\nmetrics: 0.0.0.0:9100\nmetrics_allow_remote: true\n', 'r.yaml');
  t.deepEqual(remote.metrics, { host: '0.0.0.0', port: 9100, allowRemote: true });
});

const VM = '  - guest_cid: 3\n    socket: /tmp/s.sock\n';
const BAD: Array<[string, string, number, RegExp]> = [
  ['empty file', '', 1, /the file is empty/],
  ['only a comment', '# nothing\n', 1, /the file is empty/],
  ['not a mapping', '- a\n- b\n', 1, /the file: expected a mapping .*got a list/],
  ['no vms', 'log_level: info\n', 1, /vms: is missing/],
  ['unknown top-level key', `vms:\n${VM}verbose: true\n`, 4, /unknown top-level key "verbose" \(known: vms, log_level, metrics/],
  ['unknown VM key', `vms:\n${VM}    cid: 4\n`, 4, /unknown VM key "cid" \(known: guest_cid, socket, uds_path/],
  ['vsock backend key', `vms:\n${VM}    forward-cid: 1\n`, 4, /forward-cid: vhost-device-vsock's vsock backend .* is not offered here; give uds_path/],
  ['vms is a mapping', 'vms:\n  guest_cid: 3\n', 2, /vms: expected a list \("- " items\), got a mapping/],
  ['vms is empty', 'vms: []\n', 1, /vms: the list is empty/],
  ['a VM is a string', 'vms:\n  - hello\n', 2, /a VM \(an item of vms:\): expected a mapping .*got the string "hello"/],
  ['guest_cid a word', 'vms:\n  - guest_cid: three\n    socket: /s\n', 2, /guest_cid: expected an integer, got the string "three"/],
  ['guest_cid quoted', 'vms:\n  - guest_cid: "3"\n    socket: /s\n', 2, /guest_cid: expected an integer, got the string "3"/],
  ['guest_cid a float', 'vms:\n  - guest_cid: 3.5\n    socket: /s\n', 2, /guest_cid: expected an integer, got the number 3\.5/],
  ['guest_cid reserved', 'vms:\n  - guest_cid: 2\n    socket: /s\n', 2, /guest_cid: guest_cid 2 is reserved or out of range/],
  ['guest_cid missing', 'vms:\n  - socket: /s\n', 2, /this VM has no guest_cid/],
  ['socket a number', 'vms:\n  - guest_cid: 3\n    socket: 5\n', 3, /socket: expected a string, got the number 5/],
  ['socket empty', 'vms:\n  - guest_cid: 3\n    socket:\n', 3, /socket: expected a string, got nothing/],
  ['socket too long', `vms:\n  - guest_cid: 3\n    socket: /${'x'.repeat(120)}\n`, 3, /socket: the path is 121 bytes long, more than the 107/],
  ['uds_path = socket', 'vms:\n  - guest_cid: 3\n    socket: /s\n    uds_path: /s\n', 4, /uds_path: the same path as socket/],
  ['queue_size not a power of 2', `vms:\n${VM}    queue_size: 300\n`, 4, /queue_size: size 300 is not a power of 2/],
  ['tx_buffer_size negative', `vms:\n${VM}    tx_buffer_size: -1\n`, 4, /tx_buffer_size: size -1 is out of range/],
  ['groups with spaces', `vms:\n${VM}    groups: a b\n`, 4, /groups: groups "a b": expected names joined by '\+'/],
  ['forwards not a list', `vms:\n${VM}    forwards: 127.0.0.1:80\n`, 4, /forwards: expected a list/],
  ['forward without port', `vms:\n${VM}    forwards:\n      - listen: 127.0.0.1:8080\n`, 5, /this forward has no port/],
  ['forward listen a number', `vms:\n${VM}    forwards:\n      - listen: 8080\n        port: 80\n`, 5, /listen: expected HOST:PORT \(e\.g\. 127\.0\.0\.1:8080\), got a number/],
  ['forward port a string', `vms:\n${VM}    forwards:\n      - listen: 127.0.0.1:8080\n        port: http\n`, 6, /port: expected an integer, got the string "http"/],
  ['forward unknown key', `vms:\n${VM}    forwards:\n      - listen: 127.0.0.1:8080\n        port: 80\n        proto: udp\n`, 7, /unknown forward key "proto"/],
  ['log_level bad', `vms:\n${VM}log_level: verbose\n`, 4, /log_level: "verbose" is not one of error, warn, info, debug/],
  ['metrics not loopback', `vms:\n${VM}metrics: 0.0.0.0:9100\n`, 4, /metrics: 0\.0\.0\.0 is not a loopback address.*metrics_allow_remote: true/],
  ['metrics_allow_remote a string', `vms:\n${VM}metrics: 0.0.0.0:9100\nmetrics_allow_remote: yes\n`, 5, /metrics_allow_remote: expected true or false, got the string "yes"/],
  ['metrics bad port', `vms:\n${VM}metrics: 127.0.0.1:99999\n`, 4, /metrics: port 99999 is out of range/],
  ['ring packed', `vms:\n${VM}ring: packed\n`, 4, /ring: "packed" is not one of auto, split/],
  ['pcap_snaplen without pcap', `vms:\n${VM}pcap_snaplen: 10\n`, 4, /pcap_snaplen: nothing is captured/],
  ['pcap_snaplen too big', `vms:\n${VM}pcap: /x\npcap_snaplen: 999999\n`, 5, /pcap_snaplen: payload bytes 999999 is out of range/],
  ['duplicate CIDs', `vms:\n${VM}  - guest_cid: 3\n    socket: /tmp/other.sock\n`, 4, /guest_cid 3 is also the guest_cid of the VM at line 2/],
  ['duplicate paths', `vms:\n${VM}  - guest_cid: 4\n    socket: /tmp/x.sock\n    uds_path: /tmp/s.sock\n`, 4, /path \/tmp\/s\.sock is also used by the VM at line 2/],
  ['duplicate forwards', `vms:\n${VM}    forwards:\n      - {listen: "127.0.0.1:1", port: 1}\n      - {listen: "127.0.0.1:1", port: 2}\n`, 6, /listen 127\.0\.0\.1:1 is also forwarded at line 5/],
  ['duplicate key', 'vms:\n  - guest_cid: 3\n    guest_cid: 4\n    socket: /s\n', 3, /not valid YAML: Map keys must be unique/],
  ['bad indentation', 'vms:\n  - guest_cid: 3\n   socket: /s\n', 3, /not valid YAML/],
  ['a key that is a list', `vms:\n${VM}[a]: 1\n`, 4, /a top-level key must be a plain name, got a list/],
  ['a tab', `vms:\n${VM}\tlog_level: info\n`, 4, /not valid YAML/],
];

for (const [name, text, line, message] of BAD) {
  test(`config file refused: ${name}`, (t) => {
    const e = t.throws(() => parseConfigText(text, '/etc/vsock.yaml'), { instanceOf: ConfigFileError });
    t.is(e?.code, 'ERR_VSOCK_CONFIG');
    t.is(e?.path, '/etc/vsock.yaml');
    t.is(e?.line, line, e?.message);
    t.regex(e?.message ?? '', message);
    t.true(e?.message.startsWith(`/etc/vsock.yaml:${line}:`), e?.message);
  });
}

test('config files that cannot be read: missing, a folder, too large, binary', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.throws(() => readConfigFile(join(dir, 'nope.yaml')), { instanceOf: ConfigFileError, message: `${join(dir, 'nope.yaml')}: cannot read it: no such file` });
  mkdirSync(join(dir, 'sub'));
  t.throws(() => readConfigFile(join(dir, 'sub')), { instanceOf: ConfigFileError, message: /sub: is a folder, not a file$/ });
  writeFileSync(join(dir, 'big.yaml'), `vms: []\n#${'x'.repeat(CONFIG_FILE_MAX_BYTES)}\n`);
  t.throws(() => readConfigFile(join(dir, 'big.yaml')), { instanceOf: ConfigFileError, message: /big\.yaml: is \d+ bytes; a config file is at most 1048576/ });
  writeFileSync(join(dir, 'bin.yaml'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 0xff, 0xfe, 10]));
  t.throws(() => readConfigFile(join(dir, 'bin.yaml')), { instanceOf: ConfigFileError, message: /bin\.yaml:1:\d+: / });
});

test('--config on the command line: flags override the file; --vm with --config is refused; main says FILE:LINE and exits 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vsock-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'vsock.yaml');
  writeFileSync(file, `vms:\n${VM}log_level: warn\npcap: /tmp/a.pcap\n`);
  const p = parseArgs(['--config', file, '--log-level', 'debug', '--metrics', '9100']);
  t.deepEqual(p, {
    help: false,
    config: { vms: [{ guestCid: 3, socketPath: '/tmp/s.sock', udsPath: null }], forwards: [], logLevel: 'debug', pcapPath: '/tmp/a.pcap', metrics: { host: '127.0.0.1', port: 9100, allowRemote: false } },
  });
  const both = t.throws(() => parseArgs(['--config', file, '--vm', 'guest-cid=4,socket=/x']), { instanceOf: CliUsageError });
  t.is(both?.flag, '--config');
  t.regex(both?.message ?? '', /either in the file or with --vm and --forward, not both/);
  writeFileSync(file, `vms:\n${VM}    socket: /again\n`);
  let err = '';
  t.is(await main(['--config', file], { stdout: () => {}, stderr: (s) => (err += s) }), 2);
  t.regex(err, new RegExp(`^vhost-user-vsock: --config ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:4:5: not valid YAML: Map keys must be unique`));
});

const V = 'guest-cid=3,socket=/tmp/s.sock';
const FLAGS_OK: Array<[string, string[], object]> = [
  ['--log-level', ['--vm', V, '--log-level', 'warn'], { logLevel: 'warn' }],
  ['--metrics PORT', ['--vm', V, '--metrics', '9100'], { metrics: { host: '127.0.0.1', port: 9100, allowRemote: false } }],
  ['--metrics HOST:PORT', ['--vm', V, '--metrics=127.0.0.2:9100'], { metrics: { host: '127.0.0.2', port: 9100, allowRemote: false } }],
  ['--metrics [::1]:PORT', ['--vm', V, '--metrics', '[::1]:0'], { metrics: { host: '::1', port: 0, allowRemote: false } }],
  ['--metrics localhost', ['--vm', V, '--metrics', 'localhost:9100'], { metrics: { host: 'localhost', port: 9100, allowRemote: false } }],
  ['--metrics remote, allowed', ['--vm', V, '--metrics', '0.0.0.0:9100', '--metrics-allow-remote'], { metrics: { host: '0.0.0.0', port: 9100, allowRemote: true } }],
  ['--pcap and --pcap-snaplen', ['--vm', V, '--pcap', '/tmp/x.pcap', '--pcap-snaplen', '0'], { pcapPath: '/tmp/x.pcap', pcapSnaplen: 0 }],
];

for (const [name, argv, extra] of FLAGS_OK) {
  test(`flag: ${name}`, (t) => {
    t.deepEqual(parseArgs(argv), { help: false, config: { vms: [{ guestCid: 3, socketPath: '/tmp/s.sock', udsPath: null }], forwards: [], ...extra } });
  });
}

test('--vm pcap=, queue-size=, group=/groups= (sibling groups) and the accepted-without-effect tx-buffer-size=', (t) => {
  type Parsed = { help: false; config: import('../drivers/virtio-vsock/daemon/config.js').DaemonConfig };
  const p = parseArgs(['--vm', `${V},pcap=/tmp/v.pcap,queue-size=512,tx-buffer-size=65536,groups=a+b`]) as Parsed;
  t.deepEqual(p.config.vms, [{ guestCid: 3, socketPath: '/tmp/s.sock', udsPath: null, pcapPath: '/tmp/v.pcap', maxQueueSize: 512, groups: ['a', 'b'] }]);
  t.is(p.config.notices?.length, 1);
  t.deepEqual((parseArgs(['--vm', `${V},group=lab`]) as Parsed).config.vms[0]!.groups, ['lab']);
  t.throws(() => parseArgs(['--vm', `${V},group=a,groups=b`]), { message: /--vm: group and groups are the same key/ });
  t.throws(() => parseArgs(['--vm', `${V},group=a b`]), { message: /--vm: group "a b": expected names joined by/ });
  t.throws(() => parseArgs(['--vm', `${V},group=`]), { message: /--vm: group "": expected names joined by/ });
});

const FLAGS_BAD: Array<[string, string[], string, RegExp]> = [
  ['unknown log level', ['--vm', V, '--log-level', 'verbose'], '--log-level', /"verbose" is not one of error, warn, info, debug/],
  ['log level twice', ['--vm', V, '--log-level', 'info', '--log-level', 'debug'], '--log-level', /given twice/],
  ['metrics not loopback', ['--vm', V, '--metrics', '0.0.0.0:9100'], '--metrics', /0\.0\.0\.0 is not a loopback address: anyone who can reach it could read the metrics .*--metrics-allow-remote/],
  ['metrics LAN host name', ['--vm', V, '--metrics', 'myhost:9100'], '--metrics', /not a loopback address/],
  ['metrics bad port', ['--vm', V, '--metrics', '70000'], '--metrics', /port 70000 is out of range/],
  ['metrics empty', ['--vm', V, '--metrics='], '--metrics', /not HOST:PORT/],
  ['allow-remote alone', ['--vm', V, '--metrics-allow-remote'], '--metrics-allow-remote', /only with --metrics/],
  ['allow-remote with a value', ['--vm', V, '--metrics-allow-remote=yes'], '--metrics-allow-remote', /takes no value/],
  ['snaplen without pcap', ['--vm', V, '--pcap-snaplen', '10'], '--pcap-snaplen', /nothing is captured/],
  ['snaplen out of range', ['--vm', V, '--pcap', '/x', '--pcap-snaplen', '262069'], '--pcap-snaplen', /out of range \(0\.\.262068\)/],
  ['pcap empty', ['--vm', V, '--pcap='], '--pcap', /path is empty/],
  ['vm pcap empty', ['--vm', `${V},pcap=`], '--vm', /pcap is empty/],
  ['vm queue-size', ['--vm', `${V},queue-size=100`], '--vm', /queue-size 100 is not a power of 2/],
  ['config empty path', ['--config='], '--config', /empty path/],
];

for (const [name, argv, flag, message] of FLAGS_BAD) {
  test(`flag refused: ${name}`, (t) => {
    const e = t.throws(() => parseArgs(argv), { instanceOf: CliUsageError });
    t.is(e?.flag, flag);
    t.regex(e?.message ?? '', message);
    t.true(e?.message.startsWith(`${flag}:`), e?.message);
  });
}
