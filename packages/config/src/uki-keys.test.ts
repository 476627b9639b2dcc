import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, beforeAll } from 'vitest';
import { loadConfig } from './load.js';
import { renderConfig } from './load.js';

// The UKI, Secure Boot and emergency shell keys (issue 13).
let dir: string;
const opts = () => ({ preset: 'mini', presetDirs: [join(dir, 'presets')], dropInDirs: [] as string[] });
const conf = async (name: string, text: string) => {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
};
// openssl passwd -6 -salt saltsalt test
const HASH = '$6$saltsalt$JcVDtuB6d1BHhCd5RPBh8g8xX/1CbY8EU2PN0MTaj2/Mypw4P./C6dN4j0HALhzBDTocyW1Jm.gYaTPjFGCV40';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-uki-config-'));
  await mkdir(join(dir, 'presets'));
  await writeFile(
    join(dir, 'presets', 'mini.conf'),
    '[Distribution]\nDistribution=debian\nRelease=trixie\nMirror=http://deb.debian.org/debian\n[Content]\nPackages=systemd\nUkiStubPackage=systemd-boot-efi\n',
  );
});

describe('UKI and Secure Boot keys', () => {
  it('reads Format=, KernelCommandLine= (whitespace normalised) and the signing pair', async () => {
    const file = await conf(
      'uki.conf',
      '[Output]\nFormat=uki\n[Content]\nKernelCommandLine=root=LABEL=r   rw  quiet\n[Validation]\nSecureBootKey=/k/db.key\nSecureBootCertificate=/k/db.crt\n',
    );
    const c = await loadConfig({ ...opts(), configFiles: [file] });
    expect(c.format).toBe('uki');
    expect(c.kernelCommandLine).toBe('root=LABEL=r rw quiet');
    expect(c.secureBootKey).toBe('/k/db.key');
    expect(c.ukiStubPackage).toBe('systemd-boot-efi');
    expect(renderConfig(c)).toMatch(/\[Validation\]\nSecureBootKey=\/k\/db.key\nSecureBootCertificate=\/k\/db.crt/);
    // Flags win over files.
    const f = await loadConfig({ ...opts(), configFiles: [file], overrides: { 'kernel-command-line': ' ro ', format: 'uki' } });
    expect(f.kernelCommandLine).toBe('ro');
  });

  it('defaults to cpio and leaves the emergency shell to the builder', async () => {
    const c = await loadConfig(opts());
    expect(c.format).toBe('cpio');
    expect(c.emergencyShell).toBeUndefined();
  });

  it('rejects an unknown format, a key without its certificate, and signing a cpio', async () => {
    await expect(loadConfig({ ...opts(), configFiles: [await conf('f.conf', '[Output]\nFormat=pe\n')] })).rejects.toThrow(/f.conf:2: Output.Format: unknown format "pe"/);
    await expect(loadConfig({ ...opts(), overrides: { format: 'pe' } })).rejects.toThrow('unknown format "pe"');
    await expect(loadConfig({ ...opts(), overrides: { format: 'uki', 'sign-key': '/k' } })).rejects.toThrow('SecureBootKey= and SecureBootCertificate= go together');
    await expect(loadConfig({ ...opts(), overrides: { 'sign-key': '/k', 'sign-cert': '/c' } })).rejects.toThrow(/signs a UKI, but the output format is cpio/);
  });

  it('takes a password hash, never a clear-text password', async () => {
    const ok = await conf('pw.conf', `[Content]\nEmergencyShell=password\nEmergencyShellPassword=${HASH}\n`);
    const c = await loadConfig({ ...opts(), configFiles: [ok] });
    expect(c.emergencyShell).toBe('password');
    expect(c.emergencyShellPassword).toBe(HASH);
    expect(renderConfig(c)).not.toContain(HASH);
    const clear = await conf('clear.conf', '[Content]\nEmergencyShell=password\nEmergencyShellPassword=hunter2\n');
    await expect(loadConfig({ ...opts(), configFiles: [clear] })).rejects.toThrow(/clear.conf:3: Content.EmergencyShellPassword: expected a password hash/);
    const missing = await conf('missing.conf', '[Content]\nEmergencyShell=password\n');
    await expect(loadConfig({ ...opts(), configFiles: [missing] })).rejects.toThrow('EmergencyShell=password needs EmergencyShellPassword=');
    const bad = await conf('bad.conf', '[Content]\nEmergencyShell=maybe\n');
    await expect(loadConfig({ ...opts(), configFiles: [bad] })).rejects.toThrow(/expected yes, password or no/);
    expect((await loadConfig({ ...opts(), configFiles: [await conf('no.conf', '[Content]\nEmergencyShell=no\n')] })).emergencyShell).toBe('no');
  });
});
