import { readFile } from 'node:fs/promises';
import { UserError, isErrnoException } from '@mkinitrd-pkg/common';
import { normalizeModuleName } from './moddb.js';

/** The KernelModules= word that selects what the running system uses (host-only image). */
export const HOST_PATTERN = 'host';

/**
 * Stands in for /proc/modules (same format: a module name first on each line), e.g. the
 * list of another machine, or of a QEMU guest in a test: this build machine may have no
 * /proc/modules at all.
 */
export const HOST_MODULES_ENV = 'MKINITRD_PKG_HOST_MODULES';

export interface HostModuleSources {
  /** A /proc/modules-format file; default $MKINITRD_PKG_HOST_MODULES, else /proc/modules. */
  modulesFile?: string;
  /** Where the root's filesystem type is read (default /proc/self/mounts). */
  mountsFile?: string;
  /** default /etc/crypttab. */
  crypttabFile?: string;
}

export interface HostModules {
  /** Normalised module names, in the order found, without duplicates. */
  names: string[];
  /** What each group came from, for the log. */
  loaded: number;
  rootFilesystem: string | undefined;
  crypttab: boolean;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * What a host-only image needs, as dracut --hostonly and mkosi-initrd's host mode take
 * it: the modules the running system has loaded (/proc/modules; their dependencies are
 * added by the selection like any other), the module of the root's filesystem type
 * (/proc/self/mounts) and, when /etc/crypttab names volumes, dm-crypt (the ciphers are
 * among the loaded modules once a volume is open).
 */
export async function readHostModules(o: HostModuleSources = {}): Promise<HostModules> {
  const modulesFile = o.modulesFile ?? process.env[HOST_MODULES_ENV] ?? '/proc/modules';
  const text = await readIfExists(modulesFile);
  if (text === undefined) {
    throw new UserError('INPUT', `KernelModules=${HOST_PATTERN} needs the running system's module list, but ${modulesFile} does not exist`, {
      hint: `build on the machine the image is for, or point ${HOST_MODULES_ENV} at a copy of its /proc/modules`,
    });
  }
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const name = line.trim().split(/\s+/)[0];
    if (name && /^[A-Za-z0-9_-]+$/.test(name)) names.add(normalizeModuleName(name));
  }
  const loaded = names.size;

  let rootFilesystem: string | undefined;
  for (const line of ((await readIfExists(o.mountsFile ?? '/proc/self/mounts')) ?? '').split('\n')) {
    const [, mountPoint, type] = line.split(/\s+/);
    if (mountPoint === '/' && type) rootFilesystem = type; // the last mount on / is the visible one
  }
  if (rootFilesystem && /^[A-Za-z0-9_-]+$/.test(rootFilesystem)) names.add(normalizeModuleName(rootFilesystem));

  const crypttab = ((await readIfExists(o.crypttabFile ?? '/etc/crypttab')) ?? '').split('\n').some((l) => l.trim() !== '' && !l.trim().startsWith('#'));
  if (crypttab) names.add('dm_crypt');
  return { names: [...names], loaded, rootFilesystem, crypttab };
}
