import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '@mkinitrd-pkg/common';
import { mkinitrdPkg } from './lib/cli.js';
import { enrolSecureBootKey } from './lib/tools-root.js';
import { OVMF, bootQemuUefi, makeEsp, makeTestRoot, type BootSession } from '../scripts/lib/qemu.mjs';

/**
 * Issue 13: a signed extension beside a signed UKI is verified by the booted kernel, with
 * the signing certificate trusted the way a real machine trusts it — enrolled in UEFI db,
 * which the kernel loads into its platform keyring (Debian 13's 6.12:
 * DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING=y). The initrd has no /etc/verity.d (no
 * --verity-cert), so systemd's user-space check has nothing to trust, and
 * dm_verity.require_signatures=1 makes the kernel refuse any verity table without a
 * signature it verified itself: a merge can only come from the kernel's check. An
 * extension signed by a key outside db (the OVMF snakeoil key) is refused.
 * OVMF Secure Boot under TCG: two firmware boots.
 */
const TEST_CACHE = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const EPOCH = '1700000000';
const ROOT_LABEL = 'ukiroot';
const CMDLINE = `console=ttyS0 panic=-1 root=LABEL=${ROOT_LABEL} rw dm_verity.require_signatures=1 systemd.journald.forward_to_console=1`;
const ovmfInstalled = await stat(OVMF.secureCode).then(() => true, () => false);

let dir: string;
let uki: string;
let vars: string;
let rootImage: string;
const exts: Record<'db' | 'snakeoil', string> = { db: '', snakeoil: '' };
const sessions: BootSession[] = [];

async function cli(args: string[]): Promise<void> {
  const r = await mkinitrdPkg(args);
  expect(r.exitCode, `mkinitrd-pkg ${args.join(' ')}\n${r.stderr}`).toBe(0);
}

describe.skipIf(!ovmfInstalled)('signed extension beside a signed UKI, verified by the kernel (Secure Boot, db → platform keyring)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-ext-'));
    const key = join(dir, 'db.key');
    const cert = join(dir, 'db.crt');
    await run('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', '/CN=mkinitrd-pkg test db/', '-keyout', key, '-out', cert]);
    const snakeoilKey = join(dir, 'snakeoil.key');
    await run('openssl', ['rsa', '-in', OVMF.snakeoilKey, '-passin', 'pass:snakeoil', '-out', snakeoilKey]);
    for (const [name, k, c] of [['db', key, cert], ['snakeoil', snakeoilKey, OVMF.snakeoilCert]] as const) {
      await mkdir(join(dir, name));
      exts[name] = join(dir, name, 'lvm.raw');
      await cli(['sysext', 'build', '--definition', 'lvm', '--preset', 'debian', '--verity', '--sign-key', k, '--sign-cert', c, '--output', exts[name], '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE]);
    }
    uki = join(dir, 'signed.efi');
    // No --verity-cert: nothing in the initrd trusts the signer.
    await cli(['build', '--preset', 'debian', '--format', 'uki', '--kernel-command-line', CMDLINE, '--sign-key', key, '--sign-cert', cert, '--output', uki, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE]);
    rootImage = await makeTestRoot({ uuid: '0c8b1d56-3f0e-4b5e-9a51-7d1c1a2b3c4e', label: ROOT_LABEL });
    // Enrol the key as PK, KEK and db.
    vars = join(dir, 'vars.fd');
    await enrolSecureBootKey(cert, vars, TEST_CACHE);
  }, 1_800_000);

  afterAll(async () => {
    for (const s of sessions) s.kill();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The UKI with `ext` where systemd-stub finds it (BOOTX64.EFI.extra.d/), until systemd-sysext has decided. */
  async function bootWith(ext: string): Promise<string> {
    const esp = await makeEsp({ efi: uki, extra: { 'EFI/BOOT/BOOTX64.EFI.extra.d/lvm.raw': ext }, dir: await mkdtemp(join(dir, 'esp-')) });
    const session = await bootQemuUefi({ esp, rootImage, secure: true, vars });
    sessions.push(session);
    try {
      return await session.waitFor(/Merged extensions into '\/usr'|Failed to merge hierarchies|Failed to start systemd-sysext/, 600_000);
    } finally {
      session.kill();
    }
  }

  it('signed with the db key: the kernel verifies it (platform keyring) and systemd-sysext merges it', async () => {
    const out = await bootWith(exts.db);
    expect(out).toMatch(/secureboot: Secure boot enabled/);
    // The kernel took db's certificate into its platform keyring.
    expect(out).toMatch(/Loaded X\.509 cert 'mkinitrd-pkg test db/);
    expect(out).toMatch(/Merged extensions into '\/usr'/);
    expect(out).not.toMatch(/Required key not available/);
  }, 900_000);

  it('signed with a key outside db (snakeoil): refused, nothing merged', async () => {
    const out = await bootWith(exts.snakeoil);
    expect(out).not.toMatch(/Merged extensions into '\/usr'/);
    const why = out.split('\n').filter((l) => /verity|Required key|Failed to merge|sysext/i.test(l)).slice(-4).join('\n');
    console.log(`snakeoil-signed extension:\n${why}`);
    expect(out).toMatch(/Failed to merge hierarchies|Failed to start systemd-sysext/);
  }, 900_000);
});
