import { mkdtemp, writeFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '@mkinitrd-pkg/common';
import { loadConfig, renderConfig } from './load.js';

// ExtensionImagePolicy= (issue 11): which extension images the initrd's systemd-sysext accepts.
let dir: string;
const opts = () => ({ preset: 'mini', presetDirs: [join(dir, 'presets')], dropInDirs: [] as string[] });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-extpolicy-config-'));
  await mkdir(join(dir, 'presets'));
  await writeFile(join(dir, 'presets', 'mini.conf'), '[Distribution]\nDistribution=debian\nRelease=trixie\nMirror=http://deb.debian.org/debian\n[Content]\nPackages=systemd\n');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('ExtensionImagePolicy=', () => {
  it('defaults to open (systemd\'s own defaults) and reads verity and signed', async () => {
    expect((await loadConfig(opts())).extensionImagePolicy).toBe('open');
    for (const value of ['verity', 'signed', 'open'] as const) {
      const file = join(dir, `${value}.conf`);
      await writeFile(file, `[Content]\nExtensionImagePolicy=${value}\n`);
      const c = await loadConfig({ ...opts(), configFiles: [file] });
      expect(c.extensionImagePolicy).toBe(value);
      expect(renderConfig(c)).toContain(`ExtensionImagePolicy=${value}\n`);
    }
  });

  it('refuses an unknown value with the file, the line and the choices', async () => {
    const file = join(dir, 'bad.conf');
    await writeFile(file, '[Content]\nExtensionImagePolicy=root=verity\n');
    const error = await loadConfig({ ...opts(), configFiles: [file] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).message).toMatch(/bad\.conf:2: .*unknown extension image policy/);
    expect((error as UserError).hint).toMatch(/open, verity, signed/);
  });
});
