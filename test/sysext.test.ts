import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, expectOneLineError, mkinitrdPkg } from './lib/cli.js';

/**
 * sysext images proven by the tools that consume them: systemd-dissect recognises them,
 * veritysetup verifies them, openssl verifies their signature; their content is read
 * back with unsquashfs / fsck.erofs. Real apt against the Debian mirror.
 */
const CACHE = process.env.MKINITRD_PKG_SYSEXT_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-sysext-test-cache';
const EPOCH = '1700000000';
const ROOT_TYPE = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';
const VERITY_TYPE = '2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5';
const SIG_TYPE = '41092B05-9FC8-4523-994F-2DEF0408B176';

let dir: string;
let key: string;
let cert: string;
let otherCert: string;

const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

async function sysext(args: string[], env: Record<string, string> = {}) {
  return mkinitrdPkg(['sysext', 'build', ...args, '--cache-dir', CACHE, '--source-date-epoch', EPOCH], env);
}

/** Build and return the --json result; the build must succeed. */
async function build(args: string[]) {
  const result = await sysext([...args, '--json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return JSON.parse(result.stdout);
}

interface Part {
  start: number;
  size: number;
  type: string;
  uuid: string;
  name: string;
}

async function partitions(image: string): Promise<Part[]> {
  const { stdout } = await execa('sfdisk', ['--json', image]);
  return JSON.parse(stdout).partitiontable.partitions;
}

/** Copy one partition out of the disk image by its sector offsets, as dd would. */
async function dump(image: string, p: Part, out: string): Promise<string> {
  const fh = await open(image, 'r');
  try {
    const buf = Buffer.alloc(p.size * 512);
    await fh.read(buf, 0, buf.length, p.start * 512);
    await writeFile(out, buf);
  } finally {
    await fh.close();
  }
  return out;
}

async function dissect(image: string): Promise<string> {
  const result = await execa('systemd-dissect', [image], { reject: false });
  expect(result.exitCode, String(result.stderr)).toBe(0);
  return String(result.stdout);
}

/** Paths in a squashfs image, relative, directories included. */
async function squashfsPaths(file: string): Promise<string[]> {
  const { stdout } = await execa('unsquashfs', ['-l', '-d', 'R', file]);
  return String(stdout)
    .split('\n')
    .filter((l) => l.startsWith('R/'))
    .map((l) => l.slice(2));
}

async function walk(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const childRel = rel ? `${rel}/${name}` : name;
    out.push(childRel);
    if ((await stat(join(root, childRel)).catch(() => undefined))?.isDirectory() && !(await readlink(join(root, childRel)).catch(() => undefined))) {
      out.push(...(await walk(root, childRel)));
    }
  }
  return out;
}

/** What systemd-sysext merges: /usr and /opt, nothing else; pruned like the base. */
function expectOnlyUsrAndPruned(paths: string[]) {
  expect(paths.filter((p) => !/^(usr|opt)(\/|$)/.test(p))).toEqual([]);
  expect(paths.filter((p) => /^usr\/share\/(doc|man|info|locale|lintian|bash-completion)(\/|$)/.test(p))).toEqual([]);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-sysext-'));
  key = join(dir, 'db.key');
  cert = join(dir, 'db.crt');
  otherCert = join(dir, 'other.crt');
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '3650', '-subj', '/CN=mkinitrd-pkg test signing key']);
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'other.key'), '-out', otherCert, '-days', '3650', '-subj', '/CN=someone else']);
});

describe('sysext build: lvm over the debian preset, verity + signature', () => {
  let out: string;
  let result: any;
  let parts: Part[];
  let data: string;
  let hash: string;

  beforeAll(async () => {
    out = join(dir, 'signed');
    await mkdir(out);
    result = await build(['--definition', 'lvm', '--preset', 'debian', '--output', join(out, 'lvm.raw'), '--sign-key', key, '--sign-cert', cert]);
    parts = await partitions(join(out, 'lvm.raw'));
    data = await dump(join(out, 'lvm.raw'), parts[0]!, join(dir, 'lvm.data'));
    hash = await dump(join(out, 'lvm.raw'), parts[1]!, join(dir, 'lvm.hash'));
  });

  it('is an extension for the initrd to systemd-dissect, with a signed verity pair', async () => {
    const text = await dissect(join(out, 'lvm.raw'));
    expect(text).toMatch(/✓ extension for initrd/);
    expect(text).toMatch(/✗ extension for system/);
    expect(text).toMatch(/^ro root\s.*squashfs.*\bsigned\b/m);
    expect(result).toMatchObject({ name: 'lvm', scope: 'initrd', format: 'squashfs', layering: 'overlay', sourceDateEpoch: Number(EPOCH) });
    // The debian preset is Debian 13 (trixie): the extension names the base's release.
    expect(result.extensionRelease).toEqual({ ID: 'debian', VERSION_ID: '13', ARCHITECTURE: 'x86-64', SYSEXT_SCOPE: 'initrd' });
    expect((await readdir(out)).sort()).toEqual(['lvm.raw', 'lvm.roothash', 'lvm.roothash.p7s']);
    expect((await stat(join(out, 'lvm.raw'))).mode & 0o777).toBe(0o644);
    expect(result.sha256).toBe(await sha256(join(out, 'lvm.raw')));
  });

  it('lays out root, root-verity and root-verity-sig with UUIDs from the root hash', async () => {
    const roothash: string = result.roothash;
    expect(roothash).toMatch(/^[0-9a-f]{64}$/);
    expect(await readFile(join(out, 'lvm.roothash'), 'utf8')).toBe(roothash);
    expect(parts.map((p) => p.type)).toEqual([ROOT_TYPE, VERITY_TYPE, SIG_TYPE]);
    expect(parts.map((p) => p.name)).toEqual(['lvm', 'lvm-verity', 'lvm-verity-sig']);
    const asUuid = (hex: string) => `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`.toUpperCase();
    expect(parts[0]!.uuid).toBe(asUuid(roothash.slice(0, 32)));
    expect(parts[1]!.uuid).toBe(asUuid(roothash.slice(32)));
  });

  it('verifies with veritysetup, and fails once one data byte changes', async () => {
    const ok = await execa('veritysetup', ['verify', data, hash, result.roothash], { reject: false });
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    const tampered = join(dir, 'lvm.tampered');
    const bytes = await readFile(data);
    bytes[bytes.length >> 1] ^= 0x01;
    await writeFile(tampered, bytes);
    const bad = await execa('veritysetup', ['verify', tampered, hash, result.roothash], { reject: false });
    expect(bad.exitCode).not.toBe(0);
  });

  it('carries a signature partition whose PKCS#7 verifies against the certificate only', async () => {
    const sigPart = await readFile(await dump(join(out, 'lvm.raw'), parts[2]!, join(dir, 'lvm.sig')));
    expect(sigPart.length % 4096).toBe(0);
    const json = JSON.parse(sigPart.toString('utf8').replace(/\0+$/, ''));
    expect(Object.keys(json)).toEqual(['rootHash', 'certificateFingerprint', 'signature']);
    expect(json.rootHash).toBe(result.roothash);
    const der = (await execa('openssl', ['x509', '-in', cert, '-outform', 'der'], { encoding: 'buffer' })).stdout as Uint8Array;
    expect(json.certificateFingerprint).toBe(createHash('sha256').update(der).digest('hex'));
    const p7s = join(dir, 'lvm.p7s');
    await writeFile(p7s, Buffer.from(json.signature, 'base64'));
    expect(await readFile(p7s)).toEqual(await readFile(join(out, 'lvm.roothash.p7s')));
    const verify = (certFile: string) =>
      execa('openssl', ['smime', '-verify', '-binary', '-inform', 'der', '-in', p7s, '-content', join(out, 'lvm.roothash'), '-certfile', certFile, '-nointern', '-noverify'], { reject: false });
    const good = await verify(cert);
    expect(good.exitCode, String(good.stderr)).toBe(0);
    expect((await verify(otherCert)).exitCode).not.toBe(0);
  });

  it('holds only what lvm2 added, under /usr, pruned like the base', async () => {
    const paths = await squashfsPaths(data);
    expect(paths).toEqual(expect.arrayContaining(['usr/sbin/lvm', 'usr/lib/udev/rules.d/69-lvm.rules', 'usr/lib/extension-release.d/extension-release.lvm']));
    expectOnlyUsrAndPruned(paths);
    // Base files (the preset installs dmsetup, systemd, libc) are not extension content.
    for (const baseFile of ['usr/sbin/dmsetup', 'usr/lib/systemd/systemd', 'usr/lib/x86_64-linux-gnu/libc.so.6', 'usr/lib/x86_64-linux-gnu/libdevmapper.so.1.02.1', 'usr/lib/os-release']) {
      expect(paths).not.toContain(baseFile);
    }
    const { stdout } = await execa('unsquashfs', ['-cat', data, 'usr/lib/extension-release.d/extension-release.lvm'], { stripFinalNewline: false });
    expect(String(stdout)).toBe('ID=debian\nVERSION_ID=13\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=initrd\n');
    expect(result.packages.map((p: { name: string }) => p.name)).toContain('lvm2');
    expect(result.packages.map((p: { name: string }) => p.name)).not.toContain('systemd');
    // lvm2's /etc/lvm/lvm.conf cannot be merged: dropped, and said so.
    expect(result.dropped.outsideUsr).toContain('etc/lvm/lvm.conf');
    expect(result.warnings.join('\n')).toMatch(/etc\/lvm\/lvm\.conf/);
    expect(result.pruned.totalFiles).toBeGreaterThan(0);
  });

  it('is reproducible: the same bytes again, and from a copy of the base instead of an overlay', async () => {
    for (const [name, extra] of [['again', []], ['copy', ['--no-overlay']]] as const) {
      const again = join(dir, name);
      await mkdir(again);
      const r = await build(['--definition', 'lvm', '--preset', 'debian', '--output', join(again, 'lvm.raw'), '--sign-key', key, '--sign-cert', cert, ...extra]);
      expect(r.layering).toBe(name === 'copy' ? 'copy' : 'overlay');
      expect(await sha256(join(again, 'lvm.raw'))).toBe(result.sha256);
      expect(await readFile(join(again, 'lvm.roothash.p7s'))).toEqual(await readFile(join(out, 'lvm.roothash.p7s')));
    }
  }, 300_000);

  it('makes a plain erofs DDI for the system scope, and --base DIR gives the same image as --preset', async () => {
    const plain = join(dir, 'plain');
    await mkdir(plain);
    const r = await build(['--definition', 'raid', '--preset', 'debian', '--output', join(plain, 'raid.raw'), '--format', 'erofs', '--scope', 'system']);
    expect(await readdir(plain)).toEqual(['raid.raw']);
    const text = await dissect(join(plain, 'raid.raw'));
    expect(text).toMatch(/✓ extension for system/);
    expect(text).toMatch(/✗ extension for initrd/);
    const p = await partitions(join(plain, 'raid.raw'));
    expect(p.map((x) => x.type)).toEqual([ROOT_TYPE]);
    const tree = join(dir, 'raid-tree');
    await execa('fsck.erofs', [`--extract=${tree}`, await dump(join(plain, 'raid.raw'), p[0]!, join(dir, 'raid.erofs'))]);
    const paths = await walk(tree);
    expect(paths).toEqual(expect.arrayContaining(['usr/sbin/mdadm', 'usr/lib/udev/rules.d/64-md-raid-assembly.rules']));
    expectOnlyUsrAndPruned(paths);
    expect(await readFile(join(tree, 'usr/lib/extension-release.d/extension-release.raid'), 'utf8')).toMatch(/^SYSEXT_SCOPE=system$/m);

    // The preset's cached installroot, named as a directory: same base, same bytes.
    const viaDir = join(dir, 'viadir');
    await mkdir(viaDir);
    const d = await build(['--definition', 'raid', '--base', result.base.root, '--output', join(viaDir, 'raid.raw'), '--format', 'erofs', '--scope', 'system']);
    expect(d.base.kind).toBe('directory');
    expect(d.sha256).toBe(r.sha256);
  }, 300_000);
});

describe('sysext build over an initrd image (--base IMAGE)', () => {
  it('keeps only what mdadm adds to the initrd, although the image has no package database', async () => {
    const out = join(dir, 'image');
    await mkdir(out);
    const initrd = join(out, 'initrd.img');
    // The initrd as `build` makes it; kernel modules do not matter here (fewer moving parts).
    const noModules = join(dir, 'no-modules.conf');
    await writeFile(noModules, '[Content]\nKernelModules=\n');
    const built = await mkinitrdPkg(['build', '--preset', 'debian', '--config', noModules, '--output', initrd, '--manifest', '', '--source-date-epoch', EPOCH, '--cache-dir', CACHE]);
    expect(built.exitCode, built.stderr).toBe(0);
    const r = await build(['--definition', 'raid', '--base', initrd, '--output', join(out, 'raid.raw'), '--verity']);
    expect(r.base.kind).toBe('image');
    expect(r.roothash).toMatch(/^[0-9a-f]{64}$/);
    expect(r.signaturePath).toBeUndefined();
    // apt reinstalled the base's packages (no dpkg database in an initrd): all dropped as identical.
    expect(r.dropped.identical).toBeGreaterThan(100);
    expect((await readdir(out)).sort()).toEqual(['initrd.img', 'raid.raw', 'raid.roothash']);
    expect(await dissect(join(out, 'raid.raw'))).toMatch(/✓ extension for initrd/);
    const p = await partitions(join(out, 'raid.raw'));
    expect(p.map((x) => x.type)).toEqual([ROOT_TYPE, VERITY_TYPE]);
    const paths = await squashfsPaths(await dump(join(out, 'raid.raw'), p[0]!, join(dir, 'raid-image.data')));
    expect(paths).toContain('usr/sbin/mdadm');
    expectOnlyUsrAndPruned(paths);
    for (const baseFile of ['usr/bin/bash', 'usr/lib/systemd/systemd', 'usr/bin/udevadm', 'usr/lib/x86_64-linux-gnu/libc.so.6', 'usr/sbin/cryptsetup', 'usr/lib/os-release']) {
      expect(paths).not.toContain(baseFile);
    }
  }, 600_000);
});

/** Every process's mount table: a process left in a build's namespace would show its overlay. */
async function mountsMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const info = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    for (const line of info.split('\n')) if (line.includes(text)) found.push(`${pid}: ${line}`);
  }
  return found;
}

async function processesMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ');
    if (cmdline.includes(text)) found.push(`${pid}: ${cmdline}`);
  }
  return found;
}

describe('sysext build killed with SIGKILL during the install', () => {
  it('leaves no mount, no process and no partial image; the next build succeeds', async () => {
    const out = join(dir, 'killed');
    await mkdir(out);
    const args = [CLI, 'sysext', 'build', '--definition', 'debug', '--preset', 'debian', '--output', join(out, 'debug.raw'), '--cache-dir', CACHE];
    const child = spawn('node', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'info' } });
    child.stderr!.resume();
    const exited = new Promise((r) => child.on('exit', r));
    // Kill it while dpkg runs on the overlay (the mount exists in the build's namespace).
    const work = join(CACHE, 'work');
    let seen: string[] = [];
    for (let i = 0; i < 1200 && child.exitCode === null; i++) {
      seen = (await processesMentioning(`${work}/sysext-`)).filter((p) => /dpkg|merged/.test(p));
      if (seen.length) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(seen.length, 'dpkg never ran on the overlay').toBeGreaterThan(0);
    expect((await mountsMentioning(`${work}/sysext-`)).length, 'the overlay is visible in the build namespace').toBeGreaterThan(0);
    child.kill('SIGKILL');
    await exited;
    // The kernel tears the PID namespace down; give it a moment.
    for (let i = 0; i < 50 && (await processesMentioning(`${work}/sysext-`)).length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await processesMentioning(`${work}/sysext-`)).toEqual([]);
    expect(await mountsMentioning(CACHE)).toEqual([]);
    const host = await execa('findmnt', ['-rn', '-o', 'TARGET']);
    expect(String(host.stdout).split('\n').filter((m) => m.startsWith(CACHE))).toEqual([]);
    expect(await readdir(out)).toEqual([]);

    const again = await sysext(['--definition', 'debug', '--preset', 'debian', '--output', join(out, 'debug.raw')]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await readdir(out)).toEqual(['debug.raw']);
    // Work dirs are named after their owner (KIND-PID-STARTTIME-…): the killed build's is
    // gone. Other tests' builds share this cache and may have theirs there right now.
    expect((await readdir(work)).filter((n) => n.startsWith(`sysext-${child.pid}-`))).toEqual([]);
    expect(await dissect(join(out, 'debug.raw'))).toMatch(/✓ extension for initrd/);
  }, 600_000);
});

describe('sysext build: bad input gets one clear line', () => {
  async function expectCleanFailure(args: string[], message: RegExp, exitCode = 1) {
    const out = await mkdtemp(join(dir, 'err-'));
    const result = await mkinitrdPkg(['sysext', 'build', '--output', join(out, 'x.raw'), '--cache-dir', CACHE, ...args]);
    expectOneLineError(result, message, exitCode);
    expect(await readdir(out)).toEqual([]);
  }

  it('unknown definition', () => expectCleanFailure(['--definition', 'nosuch', '--preset', 'debian'], /^mkinitrd-pkg: error: unknown extension definition "nosuch"/));
  it('definition file with an unknown key names file:line', async () => {
    const bad = join(dir, 'bad.conf');
    await writeFile(bad, '[Extension]\nPackages=lvm2\nFrobnicate=yes\n');
    await expectCleanFailure(['--definition', bad, '--preset', 'debian'], new RegExp(`^mkinitrd-pkg: error: ${bad}:3: unknown key Frobnicate=`));
  });
  it('base not found', () => expectCleanFailure(['--definition', 'lvm', '--base', '/nonexistent/initrd.img'], /^mkinitrd-pkg: error: base not found: \/nonexistent\/initrd\.img/));
  it('no base at all is a usage error (exit 2)', () => expectCleanFailure(['--definition', 'lvm'], /^mkinitrd-pkg: usage: name the base: --base IMAGE\|DIR or --preset NAME/, 2));
  it('--sign-key without --sign-cert is a usage error (exit 2)', () => expectCleanFailure(['--definition', 'lvm', '--preset', 'debian', '--sign-key', key], /^mkinitrd-pkg: usage: --sign-key needs --sign-cert/, 2));
  it('a bad key', async () => {
    const garbage = join(dir, 'garbage.key');
    await writeFile(garbage, 'not a key\n');
    await expectCleanFailure(['--definition', 'lvm', '--preset', 'debian', '--sign-key', garbage, '--sign-cert', cert], /^mkinitrd-pkg: error: .*garbage\.key is not a usable private key/);
  });
  it('a key that does not match the certificate', () =>
    expectCleanFailure(['--definition', 'lvm', '--preset', 'debian', '--sign-key', key, '--sign-cert', otherCert], /^mkinitrd-pkg: error: signing key .* does not belong to certificate/));
  it('unknown format is a usage error', () => expectCleanFailure(['--definition', 'lvm', '--preset', 'debian', '--format', 'ext4'], /^mkinitrd-pkg: usage: Expected --format=ext4 to be one of/, 2));
});
