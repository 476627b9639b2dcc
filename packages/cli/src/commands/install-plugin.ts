import { randomBytes } from 'node:crypto';
import { lstat, readFile, readlink, realpath, rename, rm, symlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { Flags } from '@oclif/core';
import { UserError, dataSearchPath, findDataFile, shellQuote, withAtomicOutput } from '@mkinitrd-pkg/common';
import { BaseCommand } from '../base.js';

export const PLUGIN_NAME = '50-mkinitrd-pkg.install';
export const DEFAULT_PLUGIN_DIR = '/etc/kernel/install.d';
/** Debian's plugin that stages /boot/initrd.img-KVER (initramfs-tools' image) as an initrd (systemd 252, bookworm). */
export const DISTRO_INITRD_PLUGIN = '85-initrd.install';
/** Its names: 55-initrd.install since systemd 257 (trixie). */
export const DISTRO_INITRD_PLUGINS = ['55-initrd.install', DISTRO_INITRD_PLUGIN];
const DISTRO_PLUGIN_DIR = '/usr/lib/kernel/install.d';

/**
 * The plugin shipped with this installation: scripts/kernel-install/ of a checkout,
 * kernel-install/ of the npm package or of /usr/lib/mkinitrd-pkg (common/src/data.ts).
 */
function pluginSource(): string {
  const path = findDataFile('kernel-install', PLUGIN_NAME);
  if (!path) {
    throw new UserError('IO', `cannot find the plugin ${PLUGIN_NAME} in ${dataSearchPath('kernel-install').join(', ')}`, {
      hint: 'this installation of mkinitrd-pkg is incomplete: reinstall it',
    });
  }
  return path;
}

/**
 * The plugin text with its "which mkinitrd-pkg" default lines set. Each line must be
 * there exactly once: a plugin that would silently keep PATH lookup is a bug.
 */
export function substituteDefaults(text: string, defaults: { node: string; command: string }, source = PLUGIN_NAME): string {
  let out = text;
  for (const [name, value] of [
    ['MKINITRD_PKG_DEFAULT_NODE', defaults.node],
    ['MKINITRD_PKG_DEFAULT', defaults.command],
  ] as const) {
    const line = new RegExp(`^${name}=.*$`, 'gm');
    const count = out.match(line)?.length ?? 0;
    if (count !== 1) throw new Error(`${source}: expected one ${name}= line, found ${count}`);
    out = out.replace(line, `${name}=${value === '' ? '' : shellQuote(value)}`);
  }
  return out;
}

export default class InstallPlugin extends BaseCommand {
  static override description = `Install the kernel-install(8) plugin (${PLUGIN_NAME}) that builds each new kernel's initrd`;
  static override examples = [
    '<%= config.bin %> install-plugin',
    '<%= config.bin %> install-plugin --dest /usr/lib/kernel/install.d --from-path',
  ];
  static override flags = {
    dest: Flags.string({ description: 'plugin directory', default: DEFAULT_PLUGIN_DIR }),
    'mask-85-initrd': Flags.boolean({
      description: `also mask Debian's ${DISTRO_INITRD_PLUGIN} (a /dev/null symlink in --dest), which would add /boot/initrd.img-KVER as a second initrd`,
    }),
    'from-path': Flags.boolean({
      description: 'let the plugin run `mkinitrd-pkg` from PATH instead of this installation (node + bin/run.js, absolute paths)',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(InstallPlugin);
    const source = pluginSource();
    let text: string;
    try {
      text = await readFile(source, 'utf8');
    } catch (error) {
      throw new UserError('IO', `cannot read the plugin ${source}: ${(error as Error).message}`);
    }
    let runs: string;
    if (flags['from-path']) {
      runs = 'mkinitrd-pkg from PATH (or $MKINITRD_PKG)';
    } else {
      const node = await realpath(process.execPath);
      const bin = await realpath(join(this.config.root, 'bin', 'run.js'));
      text = substituteDefaults(text, { node, command: bin }, source);
      runs = `${node} ${bin} (unless $MKINITRD_PKG is set)`;
    }
    const target = resolve(flags.dest, PLUGIN_NAME);
    // Temp file beside the target (".50-mkinitrd-pkg.install.XXXX.tmp": not a *.install
    // name kernel-install would run), fsync'd, chmod 0755, renamed over the old one.
    await withAtomicOutput(
      target,
      async (output) => {
        await output.handle.writeFile(text);
      },
      0o755,
    );
    process.stdout.write(`installed ${target} (mode 0755) from ${source}\n`);
    process.stdout.write(`the plugin runs ${runs}\n`);
    process.stdout.write(
      'it builds the initrd when kernel-install uses layout=bls (or install.conf initrd_generator=mkinitrd-pkg)\n',
    );
    // Mask the names this system's systemd ships (85 when it ships neither: the flag's name).
    const present: string[] = [];
    for (const name of DISTRO_INITRD_PLUGINS) {
      if (await lstat(join(DISTRO_PLUGIN_DIR, name)).catch(() => undefined)) present.push(name);
    }
    if (flags['mask-85-initrd']) {
      for (const name of present.length ? present : [DISTRO_INITRD_PLUGIN]) {
        process.stdout.write(`${await maskPlugin(resolve(flags.dest, name))}\n`);
      }
    } else {
      for (const name of present) {
        const mask = resolve(flags.dest, name);
        if (await lstat(mask).catch(() => undefined)) continue;
        process.stdout.write(
          `note: ${join(DISTRO_PLUGIN_DIR, name)} adds /boot/initrd.img-KVER (initramfs-tools) to each entry as a second initrd;\n` +
            `      mask it with --mask-85-initrd (ln -s /dev/null ${mask})\n`,
        );
      }
    }
  }
}

/**
 * kernel-install(8): a plugin in /etc/kernel/install.d that is a symlink to /dev/null
 * masks the one of the same name in /usr/lib/kernel/install.d. Never replaces a real file.
 */
async function maskPlugin(path: string): Promise<string> {
  const st = await lstat(path).catch(() => undefined);
  if (st) {
    if (st.isSymbolicLink() && (await readlink(path)) === '/dev/null') return `${path} is already masked (-> /dev/null)`;
    throw new UserError('IO', `${path} exists and is not a /dev/null symlink; not replacing it`, {
      hint: `remove it yourself if it is a copy of ${basename(path)} you no longer want`,
    });
  }
  const temp = resolve(path, '..', `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  await symlink('/dev/null', temp);
  try {
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw new UserError('IO', `cannot mask ${path}: ${(error as Error).message}`);
  }
  return `masked ${path} (-> /dev/null)`;
}
