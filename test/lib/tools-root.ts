import { createHash, randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type RunResult } from '@mkinitrd-pkg/common';
import { loadConfig } from '@mkinitrd-pkg/config';
import { createResolver, runInMountNamespace, systemMounts } from '@mkinitrd-pkg/resolver';

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
