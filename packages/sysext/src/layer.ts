import { mkdir, readFile, rm, symlink, writeFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError, run, type ErrorCode, type Logger } from '@mkinitrd-pkg/common';
import type { ImageConfig } from '@mkinitrd-pkg/config';
import { runInMountNamespace, type InstallResult, type InstalledPackage, type NamespaceMount } from '@mkinitrd-pkg/resolver';

export interface WorkerRequest {
  /** Where the package manager installs: the overlay's merged dir, the fallback copy, or a fresh root. */
  root: string;
  /** With `base`: find the base entries the install deleted (see findDeletions). */
  upper?: string;
  base?: string;
  ignore: readonly string[];
  config: ImageConfig;
  packages: string[];
  cacheDir: string;
  sourceDateEpoch?: number;
  logLevel: string;
  prettyLogs: boolean;
  resultFile: string;
}

export type WorkerResponse =
  | { ok: true; before: InstalledPackage[]; install: InstallResult; deletions: string[] }
  | {
      ok: false;
      error: { userError: true; code: ErrorCode; message: string; hint?: string | undefined } | { userError: false; message: string; stack?: string | undefined };
    };

const WORKER = fileURLToPath(new URL('./install-worker.js', import.meta.url));

export interface WorkerOutcome {
  before: InstalledPackage[];
  install: InstallResult;
  deletions: string[];
}

/**
 * Run the install worker in a private mount namespace with `mounts` made first, and a
 * private PID namespace inside it: when the worker ends — or is killed because we were
 * (setpriv --pdeathsig KILL and unshare --kill-child chain down from us) — the kernel
 * kills every process left in the PID namespace (apt, dpkg, maintainer scripts, any
 * daemon they started), so the mount namespace and its overlay mount cannot outlive
 * the build, even on SIGKILL. Nothing is ever mounted in the host's namespace.
 */
export async function runInstallWorker(
  workDir: string,
  mounts: readonly NamespaceMount[],
  request: Omit<WorkerRequest, 'resultFile' | 'logLevel' | 'prettyLogs'>,
  logger: Logger,
): Promise<WorkerOutcome> {
  const requestFile = join(workDir, 'install-request.json');
  const resultFile = join(workDir, 'install-result.json');
  await rm(resultFile, { force: true });
  const full: WorkerRequest = { ...request, resultFile, logLevel: logger.level, prettyLogs: Boolean(process.stderr.isTTY) };
  await writeFile(requestFile, JSON.stringify(full));
  let failure: unknown;
  try {
    await runInMountNamespace(mounts, ['unshare', '--pid', '--fork', '--kill-child', process.execPath, WORKER, requestFile], { inheritOutput: true });
  } catch (error) {
    failure = error;
  }
  let response: WorkerResponse | undefined;
  try {
    response = JSON.parse(await readFile(resultFile, 'utf8')) as WorkerResponse;
  } catch {
    response = undefined;
  }
  if (!response) {
    if (failure) throw failure;
    throw new Error('the install worker ended without a result');
  }
  if (!response.ok) {
    const e = response.error;
    if (e.userError) throw new UserError(e.code, e.message, e.hint !== undefined ? { hint: e.hint } : {});
    const error = new Error(e.message);
    if (e.stack) error.stack = e.stack;
    throw error;
  }
  return { before: response.before, install: response.install, deletions: response.deletions };
}

export interface OverlayDirs {
  upper: string;
  work: string;
  merged: string;
  mounts: NamespaceMount[];
}

/**
 * The overlay over the base, described for runInMountNamespace: upper and work dirs
 * are fresh and empty. /dev, /proc and /sys for maintainer scripts are mounted on the
 * merged dir by the resolver in its own nested namespace, after it has created the
 * mount points (runInMountNamespace makes every mount point before the first mount, so
 * they cannot be listed here: they would be created under the overlay, not in it,
 * and a base without /dev would fail). The lower dir
 * is reached through a symlink so that mount options never carry a user's path (commas
 * and colons are separators there). redirect_dir and metacopy stay off so that the
 * upper layer holds complete files and directories, readable without the overlay.
 */
export async function prepareOverlay(workDir: string, base: string): Promise<OverlayDirs> {
  const dirs = { lower: join(workDir, 'lower'), upper: join(workDir, 'upper'), work: join(workDir, 'ovl-work'), merged: join(workDir, 'merged') };
  await symlink(await realpath(base), dirs.lower);
  for (const d of [dirs.upper, dirs.work, dirs.merged]) await mkdir(d, { recursive: true });
  const options = `lowerdir=${dirs.lower},upperdir=${dirs.upper},workdir=${dirs.work},redirect_dir=off,metacopy=off,index=off`;
  return {
    upper: dirs.upper,
    work: dirs.work,
    merged: dirs.merged,
    mounts: [{ kind: 'overlay', target: dirs.merged, options }],
  };
}

/**
 * Can we mount an overlay over this base, with the upper layer in the work dir (kernel
 * support, the base's and the work dir's file systems)? Probed in a throwaway
 * namespace with the real base as the lower dir; nothing is written to the base.
 */
export async function overlayWorks(workDir: string, base: string): Promise<boolean> {
  const probe = join(workDir, 'overlay-probe');
  await mkdir(probe, { recursive: true });
  const overlay = await prepareOverlay(probe, base);
  try {
    await runInMountNamespace(overlay.mounts, ['true']);
    return true;
  } catch {
    return false;
  } finally {
    await rm(probe, { recursive: true, force: true });
  }
}

/** The fallback without overlayfs: a full copy of the base (reflinks where the filesystem has them). */
export async function copyBase(base: string, target: string): Promise<void> {
  await run('cp', ['-a', '--reflink=auto', '--', `${await realpath(base)}/.`, target]);
}
