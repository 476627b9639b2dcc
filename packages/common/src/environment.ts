import { homedir } from 'node:os';
import { join } from 'node:path';
import { UserError } from './errors.js';

/** ~/.cache/mkinitrd-pkg (or $XDG_CACHE_HOME/mkinitrd-pkg): shared by `build` and `sysext build`. */
export function defaultCacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'mkinitrd-pkg');
}

/** Package installs need root (chroot, mounts); say so before anything is written. */
export function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UserError('NOT_ROOT', `${what} needs root (package maintainer scripts run chrooted)`, {
      hint: 'run it with sudo, or as root in a container or VM',
    });
  }
}

/** $SOURCE_DATE_EPOCH (reproducible-builds.org), checked: a whole number of seconds or unset. */
export function sourceDateEpochFromEnv(): number | undefined {
  const raw = process.env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d+$/.test(raw)) throw new UserError('INPUT', `SOURCE_DATE_EPOCH must be a whole number of seconds, got "${raw}"`);
  return Number(raw);
}
