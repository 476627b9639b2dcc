import { existsSync, readFileSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { UserError } from './errors.js';

/**
 * Who owns a temporary file or directory: "PID-STARTTIME", where STARTTIME is field 22
 * of /proc/PID/stat (clock ticks since boot). A pid alone is reused; pid + start time
 * names one process for the life of the boot, so "its owner is gone" is a fact, not a
 * guess (proc(5), /proc/[pid]/stat).
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

let selfToken: string | undefined;

/** This process's owner token (see processStartTime). */
export function ownerToken(): string {
  selfToken ??= `${process.pid}-${processStartTime(process.pid) ?? '0'}`;
  return selfToken;
}

/** The pattern of an owner token inside a name. */
export const OWNER_TOKEN_SOURCE = '(\\d+)-(\\d+)';

/** Is the process that wrote `token` still running? Malformed tokens count as alive (never delete what we cannot read). */
export function isOwnerAlive(token: string): boolean {
  const m = /^(\d+)-(\d+)$/.exec(token);
  if (!m) return true;
  const start = processStartTime(Number(m[1]));
  return start !== undefined && start === m[2];
}

const FLOCK_PATHS = ['/usr/bin/flock', '/bin/flock', '/usr/sbin/flock', '/sbin/flock'];

export interface FileLock {
  release(): Promise<void>;
}

/**
 * flock(2) on `path`, held by a `flock` child process (util-linux, Essential in Debian)
 * whose stdin is a pipe from us: when this process ends — even by SIGKILL — the pipe
 * closes, `cat` exits and the kernel drops the lock. Node has no flock binding.
 * `shared` readers/writers coexist; an exclusive holder waits for them (or, with
 * `wait: false`, fails with undefined).
 */
export async function lockFile(path: string, options: { shared?: boolean; wait?: boolean } = {}): Promise<FileLock | undefined> {
  const args = [options.shared ? '-s' : '-x', ...(options.wait === false ? ['-n', '-E', '75'] : []), path, '-c', 'echo locked; exec cat >/dev/null'];
  // By absolute path, never through the caller's PATH (issue 10 item 4: a planted
  // node_modules/.bin/flock would run as root). TODO: the common tool resolver, once merged.
  const flock = FLOCK_PATHS.find((p) => existsSync(p)) ?? '/usr/bin/flock';
  const child: ChildProcess = spawn(flock, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const outcome = await new Promise<'locked' | 'busy' | Error>((resolve) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('locked')) resolve('locked');
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', (e) => resolve(e));
    child.once('exit', (code) => resolve(code === 75 ? 'busy' : new Error(err.trim() || `flock exited with ${code}`)));
  });
  if (outcome === 'busy') return undefined;
  if (outcome instanceof Error) {
    const missing = (outcome as NodeJS.ErrnoException).code === 'ENOENT';
    throw new UserError(missing ? 'MISSING_TOOL' : 'IO', missing ? 'flock is not installed' : `cannot lock ${path}: ${outcome.message}`, {
      ...(missing && { hint: 'install util-linux' }),
    });
  }
  // The lock must not keep the event loop alive on its own.
  child.unref();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  (child.stderr as unknown as { unref?: () => void }).unref?.();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      const exited = new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve();
        else child.once('exit', () => resolve());
      });
      // Waiting for the exit needs the child counted by the event loop again.
      child.ref();
      child.stdin!.end();
      await exited;
    },
  };
}

/**
 * The owner token of a process that has exited: what a killed run leaves in the names of
 * its temporaries. For tests of the stale-temporary rules (it starts and kills `sleep`).
 */
export async function exitedOwnerToken(): Promise<string> {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('spawn', resolve));
  const token = `${child.pid}-${processStartTime(child.pid!) ?? '0'}`;
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  return token;
}
