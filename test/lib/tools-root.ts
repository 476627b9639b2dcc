import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type RunResult } from '@mkinitrd-pkg/common';
import { loadConfig } from '@mkinitrd-pkg/config';
import { createResolver, runInMountNamespace, systemMounts } from '@mkinitrd-pkg/resolver';
import { OVMF } from '../../scripts/lib/qemu.mjs';

/**
 * Tools the host's Debian 12 lacks (python3-virt-firmware exists only in Debian 13),
 * installed from Debian 13's repositories with the project's own apt resolver into a root
 * under /var/tmp, cached by the package list, and run chrooted in a private mount namespace.
 */
const TRIXIE = `[Distribution]
Release=trixie
Repositories=
Repositories=
 http://deb.debian.org/debian trixie-updates main
 http://deb.debian.org/debian-security trixie-security main
[Content]
Packages=
`;

export async function toolsRoot(packages: string[], cacheDir: string): Promise<string> {
  const key = createHash('sha256').update(JSON.stringify({ TRIXIE, packages })).digest('hex').slice(0, 16);
  const dir = `/var/tmp/mkinitrd-pkg-tools-${key}`;
  if (await stat(join(dir, 'root/.complete')).then(() => true, () => false)) return join(dir, 'root');
  const temp = `${dir}.${randomBytes(4).toString('hex')}.tmp`;
  await mkdir(temp, { recursive: true });
  try {
    await writeFile(join(temp, 'trixie.conf'), TRIXIE + `Packages=${packages.join(' ')}\n`);
    const config = await loadConfig({ preset: 'debian', configFiles: [join(temp, 'trixie.conf')], dropInDirs: [] });
    await createResolver('apt').install({ root: join(temp, 'root'), config, packages: config.packages, cacheDir, logger: silentLogger() });
    await writeFile(join(temp, 'root/.complete'), '');
    await rename(temp, dir).catch(async () => {
      // Another test made it meanwhile: use theirs.
      await rm(temp, { recursive: true, force: true });
    });
    return join(dir, 'root');
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/** Run a program of a tools root, chrooted, with /dev, /proc and /sys (paths are the root's). */
export function runInToolsRoot(root: string, argv: string[]): Promise<RunResult> {
  return runInMountNamespace(systemMounts(root), ['chroot', root, ...argv]);
}

/**
 * OVMF variables with `cert` enrolled as PK, KEK and db and Secure Boot on (no Microsoft
 * keys), written to `out`. virt-fw-vars is Debian 13's (python3-virt-firmware), run in a
 * tools root; the owner GUID is the project's own.
 */
export async function enrolSecureBootKey(cert: string, out: string, cacheDir: string): Promise<void> {
  const tools = await toolsRoot(['python3-virt-firmware'], cacheDir);
  const work = await mkdtemp(join(tools, 'tmp', 'enrol-'));
  try {
    await copyFile(OVMF.vars, join(work, 'in.fd'));
    await copyFile(cert, join(work, 'db.crt'));
    const inRoot = (p: string) => p.slice(tools.length);
    const owner = '4d4b494e-4954-5244-2d50-4b472d544553';
    const enrol = await runInToolsRoot(tools, [
      'virt-fw-vars', '-i', inRoot(join(work, 'in.fd')), '-o', inRoot(join(work, 'out.fd')),
      '--set-pk', owner, inRoot(join(work, 'db.crt')), '--add-kek', owner, inRoot(join(work, 'db.crt')), '--add-db', owner, inRoot(join(work, 'db.crt')),
      '--secure-boot',
    ]);
    if (!/set variable SecureBootEnable: True/.test(enrol.stderr + enrol.stdout)) {
      throw new Error(`virt-fw-vars did not turn Secure Boot on:\n${enrol.stderr}${enrol.stdout}`);
    }
    await copyFile(join(work, 'out.fd'), out);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
