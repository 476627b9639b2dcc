import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UserError } from '@mkinitrd-pkg/common';
import { applyExtensionImagePolicy, EXTENSION_POLICY_CHECK, EXTENSION_POLICY_DROPIN, systemdVersion } from './initrd.js';

// ExtensionImagePolicy= as the drop-in systemd-sysext runs with (issue 11). That systemd
// honours it is shown by boot: test/sysext-verity.test.ts.
let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-initrd-policy-'));
});
afterEach(() => rm(root, { recursive: true, force: true }));

async function withSystemd(version: number): Promise<void> {
  const dir = join(root, 'usr/lib/x86_64-linux-gnu/systemd');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `libsystemd-shared-${version}.so`), '');
}

describe('ExtensionImagePolicy= in the image', () => {
  it('reads systemd\'s version from libsystemd-shared-NNN.so (Debian 13: 257; Fedora: usr/lib64)', async () => {
    expect(await systemdVersion(root)).toBeUndefined();
    await withSystemd(257);
    expect(await systemdVersion(root)).toBe(257);
    const fedora = join(root, 'f');
    await mkdir(join(fedora, 'usr/lib64/systemd'), { recursive: true });
    await writeFile(join(fedora, 'usr/lib64/systemd/libsystemd-shared-258.1-1.fc43.so'), '');
    expect(await systemdVersion(fedora)).toBe(258);
  });

  it('verity and signed start systemd-sysext with --image-policy=; open keeps systemd\'s defaults (no drop-in)', async () => {
    await withSystemd(257);
    await applyExtensionImagePolicy(root, 'open');
    expect(existsSync(join(root, EXTENSION_POLICY_DROPIN))).toBe(false);
    expect(existsSync(join(root, EXTENSION_POLICY_CHECK))).toBe(false);
    await applyExtensionImagePolicy(root, 'verity');
    const verity = await readFile(join(root, EXTENSION_POLICY_DROPIN), 'utf8');
    // ExecStart= is reset first: a second ExecStart= would run both for a oneshot.
    expect(verity).toMatch(/^ExecStart=\nExecStart=systemd-sysext refresh --image-policy=root=verity\+signed\+absent:usr=verity\+signed\+absent$/m);
    expect(verity).not.toMatch(/unprotected/);
    // systemd's policy cannot require a root hash it knows: the check before it does.
    expect(verity).toMatch(/^ExecStartPre=\/bin\/sh \/usr\/lib\/mkinitrd-pkg\/extension-policy-check verity$/m);
    const check = await readFile(join(root, EXTENSION_POLICY_CHECK), 'utf8');
    expect(check).toContain('has no pinned root hash');
    expect(check).toContain('is a directory extension');
    await applyExtensionImagePolicy(root, 'signed');
    const signed = await readFile(join(root, EXTENSION_POLICY_DROPIN), 'utf8');
    expect(signed).toMatch(/^ExecStart=systemd-sysext refresh --image-policy=root=signed\+absent:usr=signed\+absent$/m);
    expect(signed).toMatch(/^ExecReload=\nExecReload=\/bin\/sh \/usr\/lib\/mkinitrd-pkg\/extension-policy-check signed\nExecReload=systemd-sysext refresh --image-policy=root=signed\+absent:usr=signed\+absent$/m);
  });

  it('refuses a policy for systemd < 254 (Debian 12\'s 252 has no --image-policy and would merge nothing)', async () => {
    await withSystemd(252);
    const error = await applyExtensionImagePolicy(root, 'verity').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toBe('ExtensionImagePolicy=verity needs systemd >= 254 in the image (it has 252)');
    expect(existsSync(join(root, EXTENSION_POLICY_DROPIN))).toBe(false);
    await applyExtensionImagePolicy(root, 'open');
  });
});
