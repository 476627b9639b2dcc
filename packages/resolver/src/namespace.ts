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
    ...mounts.map((m) => `mkdir -p ${shellQuote(m.target)}`),
    ...mounts.map(mountCommand),
    `exec ${argv.map(shellQuote).join(' ')}`,
  ].join('\n');
  // setpriv --pdeathsig: if we are killed (even SIGKILL) the namespace's processes die
  // too, so no package manager keeps writing into a root nobody owns any more.
  return run(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--kill-child', 'sh', '-c', script],
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
