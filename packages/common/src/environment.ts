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
  const shown = JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}…` : raw);
  // newc stores mtimes in 32 bits (kernel buffer-format.rst): a later epoch cannot be recorded.
  if (!/^\d{1,10}$/.test(raw) || Number(raw) > 0xffffffff) {
    throw new UserError('INPUT', `the environment variable SOURCE_DATE_EPOCH must be a whole number of seconds from 0 to 4294967295, got ${shown}`, {
      hint: 'fix or unset SOURCE_DATE_EPOCH in the environment (or pass --source-date-epoch N, which wins)',
    });
  }
  return Number(raw);
}
