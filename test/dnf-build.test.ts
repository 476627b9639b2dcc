/**
 * `mkinitrd-pkg build --preset fedora` end to end, as a user runs it, with the mirror
 * pointed at an RPM repository built here (no Fedora mirror is reachable from CI).
 * Kernel modules come from the host's kernel: the Fedora kernel package is not
 * available, the resolver-level test covers DnfResolver.unpack.
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkinitrdPkg } from './lib/cli.js';
import { hostKernel } from '../scripts/lib/qemu.mjs';
import { BUILD_EPOCH, buildRpmRepos, type RpmRepos } from './fixtures/rpm/build-repo.js';

const kernel = await hostKernel();
const KVER = kernel?.version ?? '';
let repos: RpmRepos;
let dir: string;
let cache: string;
let config: string;

beforeAll(async () => {
  if (!KVER) throw new Error('no kernel in /boot: CI installs linux-image-amd64 for the modules');
  repos = await buildRpmRepos();
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-dnf-build-'));
  cache = join(dir, 'cache');
  config = join(dir, 'local.conf');
  // What a user writes to build the fedora preset from a local mirror: `Packages=`
  // empty resets the preset's list, the next line replaces it.
  await writeFile(
    config,
    `[Distribution]
Mirror=file://${repos.main}
Repositories=
RepositoryKeyCheck=no
[Content]
Packages=
Packages=mk-app mk-fails
KernelPackage=
KernelModules=
KernelModules=loop ext4
`,
  );
});

afterAll(async () => {
  await repos?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function build(out: string, extra: string[] = []) {
  return mkinitrdPkg(['build', '--preset', 'fedora', '--config', config, '--kernel-version', KVER, '--output', out, '--cache-dir', cache, ...extra]);
}

async function listImage(image: string): Promise<string[]> {
  const target = await mkdtemp(join(dir, 'extract-'));
  const r = await mkinitrdPkg(['extract', image, target]);
  expect(r.exitCode, r.stderr).toBe(0);
  return (await readdir(target, { recursive: true })).map(String).sort();
}

describe('mkinitrd-pkg build --preset fedora (local RPM mirror)', () => {
  it('builds an image with the closure, the %post result and a warning for the failing %post', async () => {
    const out = join(dir, 'a');
    await mkdir(out);
    const r = await build(join(out, 'initrd.img'), ['--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { packages: { name: string }[]; warnings: string[]; sourceDateEpoch: number; images: { sha256: string }[] };
    expect(result.packages.map((p) => p.name)).toEqual(['mk-app', 'mk-base', 'mk-fails', 'mk-lib', 'mk-shell', 'mk-system']);
    expect(result.warnings).toContain('%post scriptlet of mk-fails-1.0-1.noarch failed (exit status 1)');
    expect(result.sourceDateEpoch).toBe(BUILD_EPOCH);

    const files = await listImage(join(out, 'initrd.img'));
    expect(files).toContain('etc/mk-post-ran');
    expect(files).toContain('usr/lib/mk/lib.txt');
    expect(files).toContain('etc/initrd-release');
    // The rpm and dnf databases are pruned from the image.
    expect(files.filter((f) => /^(usr\/lib\/sysimage\/rpm|var\/lib\/dnf|var\/lib\/rpm|var\/cache\/dnf|var\/log\/(dnf|hawkey))/.test(f))).toEqual([]);
    const extracted = await mkdtemp(join(dir, 'check-'));
    await mkinitrdPkg(['extract', join(out, 'initrd.img'), extracted]);
    expect(await readFile(join(extracted, 'etc/mk-post-ran'), 'utf8')).toBe('mk-base 1.0-1 configured\n');
  });

  it('shows the failed scriptlet in the human summary too', async () => {
    const out = join(dir, 'b');
    await mkdir(out);
    const r = await build(join(out, 'initrd.img'));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('warning: %post scriptlet of mk-fails-1.0-1.noarch failed (exit status 1)');
  });

  it('is reproducible: two builds give the same image', async () => {
    const one = await build(join(dir, 'r1.img'), ['--json']);
    const two = await build(join(dir, 'r2.img'), ['--json']);
    expect(one.exitCode, one.stderr).toBe(0);
    expect(two.exitCode, two.stderr).toBe(0);
    const sha = (s: string) => (JSON.parse(s) as { images: { sha256: string }[] }).images[0]!.sha256;
    expect(sha(two.stdout)).toBe(sha(one.stdout));
  });

  /** One clear line (plus an optional hint), no stack trace, exit 1. */
  function expectOneLine(r: { exitCode: number; stderr: string }, message: RegExp) {
    expect(r.exitCode, r.stderr).toBe(1);
    const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('{'));
    expect(lines[0]).toMatch(message);
    expect(lines.length).toBeLessThanOrEqual(2);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }

  it('unknown package → one line', async () => {
    expectOneLine(await build(join(dir, 'x.img'), ['--package', 'no-such-package-mk']), /^mkinitrd-pkg: error: package not found: no-such-package-mk$/);
  });

  it('unreachable mirror → one line', async () => {
    expectOneLine(await build(join(dir, 'x.img'), ['--mirror', 'http://127.0.0.1:9/fedora']), /^mkinitrd-pkg: error: repository unreachable \(mirror\): /);
  });

  it('broken dependency → one line', async () => {
    expectOneLine(await build(join(dir, 'x.img'), ['--package', 'mk-broken']), /^mkinitrd-pkg: error: dependency problem: nothing provides mk-absent-capability needed by mk-broken-1\.0-1\.noarch$/);
  });

  it('key checking on without the Fedora key on this host → one line naming the key', async () => {
    const strict = join(dir, 'strict.conf');
    await writeFile(strict, '[Distribution]\nRepositoryKeyCheck=yes\n');
    const r = await build(join(dir, 'x.img'), ['--config', strict]);
    expectOneLine(r, /^mkinitrd-pkg: error: repository key not found: file:\/\/\/etc\/pki\/rpm-gpg\/RPM-GPG-KEY-fedora-43-x86_64$/);
    expect(r.stderr).toMatch(/distribution-gpg-keys/);
  });

  it('unsigned packages with a key given → one line about the signature', async () => {
    const signedKey = join(dir, 'key.conf');
    await writeFile(signedKey, `[Distribution]\nRepositoryKeyCheck=yes\nRepositoryKey=\nRepositoryKey=file://${repos.key}\n`);
    expectOneLine(await build(join(dir, 'x.img'), ['--config', signedKey]), /^mkinitrd-pkg: error: repository signature check failed: Package mk-\S+ is not signed$/);
  });
});
