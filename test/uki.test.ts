import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@mkinitrd-pkg/common';
import { mkinitrdPkg, expectOneLineError } from './lib/cli.js';
import { enrolSecureBootKey } from './lib/tools-root.js';
import { OVMF, ROOT_MARKER, bootQemu, bootQemuUefi, makeEsp, makeTestRoot, type BootSession } from '../scripts/lib/qemu.mjs';

/**
 * Issue 13, proven by the firmware and kernel that consume the output: a UKI built from
 * the preset's packages (systemd-stub from systemd-boot-efi, the kernel package's kernel,
 * our initrd) is reproducible, inspectable and signed for Secure Boot. OVMF's Secure Boot
 * firmware, with a variable store in which the project's own key is enrolled as PK, KEK
 * and db (virt-fw-vars, from Debian 13's python3-virt-firmware in a tools root), boots the
 * UKI signed with that key and refuses it unsigned or signed by another key (Debian's
 * snakeoil test key). The emergency shell policy is booted for `no` (the signed default)
 * and `password` (`yes` is booted by debian-boot.test.ts).
 */
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const EPOCH = '1700000000';
const ROOT_LABEL = 'ukiroot';
const CMDLINE = `console=ttyS0 panic=-1 root=LABEL=${ROOT_LABEL} rw`;
// openssl passwd -6 -salt ukitest 'uki emergency'
const PASSWORD = 'uki emergency';
const ovmfInstalled = await stat(OVMF.secureCode).then(() => true, () => false);

let dir: string;
let unsigned: string;
let snakeoilSigned: string;
let ownSigned: string;
let ownKey: string;
let ownCert: string;
let rootImage: string;
let ownVars: string;
const sessions: BootSession[] = [];
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

async function build(output: string, extra: string[]): Promise<void> {
  const r = await mkinitrdPkg(['build', '--preset', 'debian', '--format', 'uki', '--kernel-command-line', CMDLINE, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE, '--output', output, ...extra]);
  expect(r.exitCode, r.stderr).toBe(0);
}

/** The kernel and initrd inside a UKI, for a direct (firmware-less, faster) QEMU boot. */
async function unpackUki(uki: string, name: string): Promise<{ kernel: string; initrd: string }> {
  const kernel = join(dir, `${name}.vmlinuz`);
  const initrd = join(dir, `${name}.initrd`);
  await run('objcopy', ['-O', 'binary', '--only-section=.linux', uki, kernel]);
  await run('objcopy', ['-O', 'binary', '--only-section=.initrd', uki, initrd]);
  return { kernel, initrd };
}

describe.skipIf(!ovmfInstalled)('UKI: build, sign, Secure Boot', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-'));
    // The distribution's own db key, as a distribution would generate it.
    ownKey = join(dir, 'db.key');
    ownCert = join(dir, 'db.crt');
    await run('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', '/CN=mkinitrd-pkg test db/', '-keyout', ownKey, '-out', ownCert]);
    // sbsign takes an unencrypted key: the snakeoil key's password is "snakeoil".
    const snakeoilKey = join(dir, 'snakeoil.key');
    await run('openssl', ['rsa', '-in', OVMF.snakeoilKey, '-passin', 'pass:snakeoil', '-out', snakeoilKey]);
    // A real extension: build checks every --extension (a DDI whose extension-release
    // name matches its file name) before any work.
    const ext = join(dir, 'lvm.raw');
    const sysext = await mkinitrdPkg(['sysext', 'build', '--definition', 'lvm', '--preset', 'debian', '--output', ext, '--cache-dir', TEST_CACHE]);
    expect(sysext.exitCode, sysext.stderr).toBe(0);

    unsigned = join(dir, 'unsigned.efi');
    snakeoilSigned = join(dir, 'snakeoil.efi');
    ownSigned = join(dir, 'own.efi');
    await build(unsigned, []);
    await build(snakeoilSigned, ['--sign-key', snakeoilKey, '--sign-cert', OVMF.snakeoilCert]);
    await build(ownSigned, ['--sign-key', ownKey, '--sign-cert', ownCert, '--extension', ext]);
    rootImage = await makeTestRoot({ uuid: '0c8b1d56-3f0e-4b5e-9a51-7d1c1a2b3c4d', label: ROOT_LABEL });

    // Enrol the project's key: PK = KEK = db = db.crt, Secure Boot on, no Microsoft keys.
    ownVars = join(dir, 'own-vars.fd');
    await enrolSecureBootKey(ownCert, ownVars, TEST_CACHE);
  }, 1_800_000);

  afterAll(async () => {
    for (const s of sessions) s.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is reproducible: the same inputs give the same UKI bytes', async () => {
    const again = join(dir, 'again.efi');
    await build(again, []);
    expect(await sha256(again)).toBe(await sha256(unsigned));
  }, 600_000);

  it('has the stub, kernel, initrd and metadata sections; inspect shows them and the initrd', async () => {
    const r = await mkinitrdPkg(['inspect', unsigned, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    const names = info.sections.map((s: { name: string }) => s.name);
    expect(names).toEqual(expect.arrayContaining(['.text', '.sbat', '.osrel', '.cmdline', '.uname', '.initrd', '.linux']));
    expect(names.at(-1)).toBe('.linux');
    expect(info.cmdline).toBe(CMDLINE);
    expect(info.kernelVersion).toMatch(/^\d+\.\d+\.\d+.*-amd64$/);
    expect(info.osRelease.ID).toBe('debian');
    expect(info.osRelease.VARIANT_ID).toBe('mkinitrd-pkg');
    expect(info.signed).toBe(false);
    const entries = info.initrd.entries.map((e: { name: string }) => e.name);
    expect(entries).toEqual(expect.arrayContaining(['init', 'etc/initrd-release', 'usr/lib/systemd/systemd']));
    expect(entries.some((n: string) => n.startsWith(`usr/lib/modules/${info.kernelVersion}/`))).toBe(true);
    const text = await mkinitrdPkg(['inspect', unsigned]);
    expect(text.stdout).toContain(`cmdline: ${CMDLINE}`);
    expect(text.stdout).toMatch(/Image: .*unsigned\.efi:\.initrd/);
    // The manifest says what went in.
    const manifest = JSON.parse(await readFile(`${unsigned}.manifest.json`, 'utf8'));
    expect(manifest).toMatchObject({ format: 'uki', signed: false, stubPackage: 'systemd-boot-efi', kernelCommandLine: CMDLINE, emergencyShell: 'yes' });
  });

  it('is signed: sbverify accepts the signing certificate and rejects another', async () => {
    await run('sbverify', ['--cert', ownCert, ownSigned]);
    await run('sbverify', ['--cert', OVMF.snakeoilCert, snakeoilSigned]);
    const wrong = await execa('sbverify', ['--cert', OVMF.snakeoilCert, ownSigned], { reject: false });
    expect(wrong.exitCode).not.toBe(0);
    expect(wrong.stdout + wrong.stderr).toMatch(/Signature verification failed/);
    const unsignedCheck = await execa('sbverify', ['--cert', ownCert, unsigned], { reject: false });
    expect(unsignedCheck.exitCode).not.toBe(0);
  });

  it('signs deterministically up to the signature: stripped of it, two signed UKIs are the same bytes', async () => {
    // sbsign's PKCS#7 carries a signingTime attribute (OpenSSL's default), so signatures of
    // the same image differ run to run; everything they sign is identical.
    const a = join(dir, 'strip-a.efi');
    const b = join(dir, 'strip-b.efi');
    await run('cp', [ownSigned, a]);
    await run('cp', [snakeoilSigned, b]);
    await run('sbattach', ['--remove', a]);
    await run('sbattach', ['--remove', b]);
    expect(await sha256(a)).toBe(await sha256(b));
  });

  it('places extensions where systemd-stub finds them: NAME.efi.extra.d/*.raw', async () => {
    expect(await readdir(`${ownSigned}.extra.d`)).toEqual(['lvm.raw']);
  });

  it('refuses to sign a plain cpio initrd, in one line', async () => {
    const r = await mkinitrdPkg(['build', '--preset', 'debian', '--sign-key', ownKey, '--sign-cert', ownCert, '--output', join(dir, 'x.img')]);
    expectOneLineError(r, /a Secure Boot key signs a UKI, but the output format is cpio/);
    expect(await readdir(dir)).not.toContain('x.img');
  });

  const uefiBoot = async (efi: string) => {
    const esp = await makeEsp({ efi, dir: await mkdtemp(join(dir, 'esp-')) });
    const session = await bootQemuUefi({ esp, rootImage, secure: true, vars: ownVars });
    sessions.push(session);
    return session;
  };

  it('Secure Boot with the project key enrolled: the UKI signed with it boots to the real root, kernel in lockdown', async () => {
    const session = await uefiBoot(ownSigned);
    try {
      const out = await session.waitFor(ROOT_MARKER, 600_000);
      expect(out).toMatch(/secureboot: Secure boot enabled/);
      expect(out).toMatch(/Kernel is locked down from EFI Secure Boot/);
      // The UKI's .cmdline, not one a boot loader could pass (the stub ignores those under Secure Boot).
      expect(out).toMatch(new RegExp(`Command line: .*root=LABEL=${ROOT_LABEL} rw`));
    } finally {
      session.kill();
    }
  }, 700_000);

  for (const [what, efi] of [
    ['unsigned', () => unsigned],
    ['signed by another key (snakeoil, not in db)', () => snakeoilSigned],
  ] as const) {
    it(`Secure Boot refuses the UKI ${what}: "Access Denied" from the firmware`, async () => {
      const session = await uefiBoot(efi());
      try {
        const out = await session.waitFor(/BdsDxe: failed to load Boot\d+ .*: Access Denied/, 300_000);
        expect(out).not.toContain('Linux version');
      } finally {
        session.kill();
      }
    }, 400_000);
  }

  it('EmergencyShell: a signed UKI (default "no") gives no shell when the root never appears, and reboots', async () => {
    const { kernel, initrd } = await unpackUki(snakeoilSigned, 'snakeoil');
    const session = bootQemu({ kernel, initrd, append: 'root=UUID=00000000-dead-beef-0000-000000000000 rootflags=x-systemd.device-timeout=10s' });
    sessions.push(session);
    try {
      await session.waitFor('mkinitrd-pkg: emergency shell disabled (EmergencyShell=no); rebooting', 400_000);
      // -no-reboot: the guest's reboot ends QEMU.
      await session.exited;
      expect(session.output()).not.toContain('Press Enter for system maintenance');
      expect(session.output()).not.toMatch(/root@.*# |^# /m);
    } finally {
      session.kill();
    }
  }, 500_000);

  it('EmergencyShell=password: sulogin asks for the password (a hash in the config) and opens a shell for it', async () => {
    const hash = (await run('openssl', ['passwd', '-6', '-salt', 'ukitest', PASSWORD])).stdout.trim();
    const conf = join(dir, 'password.conf');
    await writeFile(conf, `[Content]\nEmergencyShell=password\nEmergencyShellPassword=${hash}\n`);
    const uki = join(dir, 'password.efi');
    await build(uki, ['--config', conf]);
    const { kernel, initrd } = await unpackUki(uki, 'password');
    // Only the hash is in the image.
    const unpacked = await mkdtemp(join(dir, 'pw-initrd-'));
    const extracted = await mkinitrdPkg(['extract', initrd, unpacked]);
    expect(extracted.exitCode, extracted.stderr).toBe(0);
    expect(await readFile(join(unpacked, 'etc/shadow'), 'utf8')).toContain(`root:${hash}:`);
    const session = bootQemu({ kernel, initrd, append: 'root=UUID=00000000-dead-beef-0000-000000000000 rootflags=x-systemd.device-timeout=10s' });
    sessions.push(session);
    try {
      // util-linux 2.38 (Debian 12) says "Give root password for maintenance", 2.41 (Debian 13) "Enter root password for system maintenance".
      await session.waitFor(/(Give|Enter) root password for (system )?maintenance/, 600_000);
      await new Promise((r) => setTimeout(r, 1000));
      session.type('wrong password\r');
      await session.waitFor(/Login incorrect/, 60_000);
      await new Promise((r) => setTimeout(r, 1000));
      const mark = session.output().length;
      session.type(`${PASSWORD}\r`);
      await session.waitFor(/# /, 60_000, mark);
      const mark2 = session.output().length;
      session.type('echo EMERGENCY-$((6*7))\r');
      await session.waitFor('EMERGENCY-42', 60_000, mark2);
    } finally {
      session.kill();
    }
  }, 900_000);
});

