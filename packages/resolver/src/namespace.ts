import { run, shellQuote, type RunOptions, type RunResult } from '@mkinitrd-pkg/common';

export interface NamespaceMount {
  /** Shell-free description of one mount made inside the namespace before the command. */
  kind: 'bind' | 'rbind' | 'proc' | 'tmpfs' | 'overlay';
  source?: string;
  target: string;
  /** overlay: lowerdir/upperdir/workdir options. */
  options?: string;
}

function mountCommand(m: NamespaceMount): string {
  const t = shellQuote(m.target);
  switch (m.kind) {
    case 'bind':
      return `mount --bind ${shellQuote(m.source!)} ${t}`;
    case 'rbind':
      return `mount --rbind ${shellQuote(m.source!)} ${t} && mount --make-rslave ${t}`;
    case 'proc':
      return `mount -t proc proc ${t}`;
    case 'tmpfs':
      return `mount -t tmpfs tmpfs ${t}`;
    case 'overlay':
      return `mount -t overlay overlay -o ${shellQuote(m.options!)} ${t}`;
  }
}

/**
 * Run a command in a private mount namespace (unshare -m, private propagation) after
 * making the given mounts there. The mounts belong to the namespace, so they vanish
 * with the process — also when it is killed with SIGKILL — and none can leak onto the
 * host. This is how maintainer scripts get /dev, /proc and /sys, and how sysext
 * layers an overlay over a base.
 */
export async function runInMountNamespace(
  mounts: readonly NamespaceMount[],
  argv: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const script = [
    'set -e',
    // mkdir right before each mount, so a mount point below an earlier mount (e.g. /dev
    // inside an overlay's merged dir) is created in the mounted tree, not under it.
    ...mounts.flatMap((m) => [`mkdir -p ${shellQuote(m.target)}`, mountCommand(m)]),
    `exec ${argv.map(shellQuote).join(' ')}`,
  ].join('\n');
  // setpriv --pdeathsig: if we are killed (even SIGKILL) the namespace's processes die
  // too. A PID namespace makes that complete: when its first process (the shell that
  // execs the command) dies, the kernel kills everything else in it — dpkg's children,
  // maintainer scripts, any daemon they started — so nothing keeps writing into a root.
  return run(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child', 'sh', '-c', script],
    options,
  );
}

/** /dev, /proc and /sys for maintainer scripts running chrooted in `root`. */
export function systemMounts(root: string): NamespaceMount[] {
  return [
    { kind: 'rbind', source: '/dev', target: `${root}/dev` },
    { kind: 'proc', target: `${root}/proc` },
    { kind: 'rbind', source: '/sys', target: `${root}/sys` },
  ];
}
