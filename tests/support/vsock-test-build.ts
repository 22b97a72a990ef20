// Linux's own vsock test suite (tools/testing/vsock/vsock_test), built from Debian's
// linux-source package (the same cached package the kernel work uses; nothing else is
// downloaded): only tools/testing/vsock and tools/include are taken from the tarball,
// and the binary is linked statically so the test guest needs no libraries for it.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir, fetchDebianPackage, repoRoot, run } from '../../appliance/image/debian.js';

export const LINUX_SOURCE_PACKAGE = 'linux-source-6.1';

/** Builds (or finds cached) vsock_test; returns its path on the host. */
export async function buildVsockTest(): Promise<string> {
  const out = cacheDir('vsock-test');
  const tree = join(out, LINUX_SOURCE_PACKAGE);
  const bin = join(tree, 'tools', 'testing', 'vsock', 'vsock_test');
  if (existsSync(bin)) return bin;
  const pkg = await fetchDebianPackage(LINUX_SOURCE_PACKAGE);
  const srcDir = join(pkg.root, 'usr', 'src');
  const tarball = readdirSync(srcDir).find((n) => /^linux-source-.*\.tar\.(xz|bz2|gz)$/.test(n));
  if (tarball === undefined) throw new Error(`${LINUX_SOURCE_PACKAGE}: no source tarball in ${srcDir}`);
  await run('tar', ['-xf', join(srcDir, tarball), '-C', out, `${LINUX_SOURCE_PACKAGE}/tools/testing/vsock`, `${LINUX_SOURCE_PACKAGE}/tools/include`], { hint: 'tar and xz-utils come with Debian' });
  await run('make', ['-C', join(tree, 'tools', 'testing', 'vsock'), 'vsock_test', 'LDFLAGS=-static'], { hint: 'needs gcc, make and libc6-dev (build-essential)' });
  return bin;
}

/** One line of vsock_test's report: "N - name...ok", or the failure text that followed "N - name...". */
export interface VsockTestCase {
  index: number;
  name: string;
  ok: boolean;
  /** Everything the case printed after its name (the failure message), trimmed. */
  detail: string;
}

/** Parses vsock_test's output (its list of cases with --list, or a run's report). */
export function parseVsockTestOutput(output: string): VsockTestCase[] {
  const cases: VsockTestCase[] = [];
  const re = /^(\d+) - (.+?)\.\.\.(.*)$/;
  let current: VsockTestCase | null = null;
  for (const line of output.split('\n')) {
    const m = re.exec(line.trimEnd());
    if (m) {
      current = { index: Number(m[1]), name: m[2]!, ok: m[3]!.trim() === 'ok', detail: m[3]!.trim() };
      cases.push(current);
    } else if (current !== null && !current.ok && line.trim() !== '' && !/^All tests have been executed|^Test /.test(line)) {
      current.detail = `${current.detail} ${line.trim()}`.trim();
    }
  }
  return cases;
}

/** Builds (or finds cached) tests/support/vsock-seqpacket-peer.c, statically linked; returns its path. */
export async function buildSeqpacketPeer(): Promise<string> {
  const src = join(repoRoot(), 'tests', 'support', 'vsock-seqpacket-peer.c');
  const bin = join(cacheDir('vsock-test'), `vsock-seqpacket-peer-${createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 12)}`);
  if (!existsSync(bin)) await run('gcc', ['-O2', '-Wall', '-Werror', '-static', '-o', bin, src], { hint: 'needs gcc and libc6-dev (build-essential)' });
  return bin;
}
