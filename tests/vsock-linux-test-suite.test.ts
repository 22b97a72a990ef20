// Linux's own vsock test suite (tools/testing/vsock/vsock_test from Debian's
// linux-source-6.1) between two stock-Linux guests whose only vsock path is our daemon:
// the guests are siblings of one group (CIDs 3 and 4), the suite's TCP control channel
// runs over a QEMU socket network on 127.0.0.1. Both guests boot once for the file
// (under TCG here: slow, so one run of the suite). Every case must print "ok"; a case
// that fails ends the suite (vsock_test exits), so a failure is reported with the cases
// that did not run.
import test from 'ava';
import { buildVsockTest, parseVsockTestOutput, type VsockTestCase } from './support/vsock-test-build.js';
import { startNetworkedLinuxGuests, startSiblingDaemon, type NetworkedLinuxGuests, type SiblingDaemon } from './support/linux-sibling-guests.js';

const SAFETY_TIMEOUT_MS = 25 * 60 * 1000; // kills a stuck QEMU; not an assertion
const SERVER_CID = 3;
const CLIENT_CID = 4;
const CONTROL_PORT = 1234;

let fx: SiblingDaemon | null = null;
let net: NetworkedLinuxGuests | null = null;
let expected: VsockTestCase[] = [];

test.before(async (t) => {
  t.timeout(12 * 60_000); // extracting and building vsock_test, two TCG boots: slow on a loaded machine
  const bin = await buildVsockTest();
  fx = await startSiblingDaemon('vsock-linux-test-suite-', [SERVER_CID, CLIENT_CID]);
  const t0 = Date.now();
  net = await startNetworkedLinuxGuests(fx, [SERVER_CID, CLIENT_CID], [{ guest: '/usr/bin/vsock_test', host: bin, mode: 0o755 }], SAFETY_TIMEOUT_MS);
  t.log(`two guests booted in ${Date.now() - t0} ms`);
  const list = await net.guests[0]!.shell.run('vsock_test --list');
  expected = list.output
    .split('\n')
    .map((l) => /^(\d+)\t(.+)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ index: Number(m[1]), name: m[2]!, ok: false, detail: '' }));
});

test.after.always(async (t) => {
  await net?.stop();
  if (fx) t.log(`daemon log (last lines):\n${await fx.dispose()}`);
});

test.serial('vsock_test: every case passes between two guests through the daemon (sibling routing)', async (t) => {
  t.timeout(12 * 60_000);
  const [server, client] = net!.guests as [NonNullable<typeof net>['guests'][0], NonNullable<typeof net>['guests'][0]];
  t.true(expected.length >= 10, `vsock_test --list: ${expected.length} cases`);
  const job = await server.shell.runBackground(`vsock_test --mode=server --control-port=${CONTROL_PORT} --peer-cid=${CLIENT_CID}`);
  const t0 = Date.now();
  const run = await client.shell.run(`vsock_test --mode=client --control-host=${net!.address(0)} --control-port=${CONTROL_PORT} --peer-cid=${SERVER_CID}`, { timeoutMs: 8 * 60 * 1000 });
  const ms = Date.now() - t0;
  const serverOut = await server.shell.run(`sleep 1; cat ${job.logFile}`);
  t.log(`client (CID ${CLIENT_CID}), exit ${run.status}, ${ms} ms:\n${run.output}`);
  t.log(`server (CID ${SERVER_CID}):\n${serverOut.output}`);
  const got = parseVsockTestOutput(run.output);
  for (const c of expected) {
    const r = got.find((g) => g.index === c.index);
    t.log(`${c.index} ${c.name}: ${r === undefined ? 'not run' : r.ok ? 'ok' : `FAILED ${r.detail}`}`);
  }
  t.is(run.status, 0);
  t.deepEqual(
    got.map((g) => [g.index, g.name, g.ok]),
    expected.map((c) => [c.index, c.name, true]),
  );
  t.regex(run.output, /All tests have been executed/);
  const stats = [SERVER_CID, CLIENT_CID].map((cid) => fx!.daemon.devices.get(cid)!.stats);
  t.log(`refused by reason: ${JSON.stringify(stats.map((s) => Object.fromEntries(Object.entries(s.dropped).filter(([, n]) => n > 0))))}`);
});
