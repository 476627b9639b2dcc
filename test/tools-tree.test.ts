import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resolveTool, shellQuote, withToolsRoot } from '@mkinitrd-pkg/common';
import { CLI } from './lib/cli.js';

/**
 * Build tools from packages (issue 9) and never through the caller's PATH (issue 10 item 4),
 * end to end through the CLI:
 *  - a node_modules/.bin full of planted programs, first on PATH and in the working
 *    directory as under npx, is never run (host tools and tools tree alike);
 *  - "two machines with different host packages": this host, and this host with its build
 *    tools replaced (an overlay over /usr/bin and /usr/sbin in a private mount namespace) by
 *    the versions of another Debian release, build byte-identical initrds and sysexts with the
 *    tools tree; with ToolsTree=host the other machine's tools do run.
 * Real apt, real packages, real tools; the shared test cache keeps warm runs short.
 */
const SHARED = process.env.MKINITRD_PKG_TEST_CACHE ?? '/var/tmp/mkinitrd-pkg-test-cache';
const EPOCH = '1700000000';
/** The image's preset, and the preset whose tools play "the other machine's" host tools. */
const PRESET = existsSync(new URL('../presets/debian-12.conf', import.meta.url)) ? 'debian-12' : 'debian';
const OTHER = 'debian';
/** What the build runs, where the host has it (Debian 12: /usr/sbin and /usr/bin). */
const SHADOWED: Record<string, string> = {
  depmod: '/usr/sbin',
  modinfo: '/usr/sbin',
  veritysetup: '/usr/sbin',
  sfdisk: '/usr/sbin',
  mksquashfs: '/usr/bin',
  lz4: '/usr/bin',
  openssl: '/usr/bin',
};

const skipReason =
  process.getuid?.() !== 0
    ? 'needs root (package installs, mount namespaces)'
    : !existsSync('/usr/bin/unshare')
      ? 'needs unshare (util-linux)'
      : undefined;

let dir: string;
let key: string;
let cert: string;
let hostOnly: string;
const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

interface Run {
  exitCode: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], options: { cwd?: string; env?: Record<string, string>; shadow?: string } = {}): Promise<Run> {
  const env = { MKINITRD_PKG_LOG_LEVEL: 'warn', ...options.env };
  const full = [...args, '--cache-dir', SHARED, '--source-date-epoch', EPOCH];
  const result = options.shadow
    ? // The other machine: this host with overlays over /usr/sbin and /usr/bin whose upper
      // layer holds the other release's tools; private to one mount namespace.
      // Absolute paths: the test's own helpers must not pick up the planted programs either.
      await execa(
        '/usr/bin/unshare',
        [
          '--mount',
          '--propagation',
          'private',
          '/bin/sh',
          '-c',
          `set -e
for d in usr/sbin usr/bin; do /usr/bin/mount -t overlay overlay -o "lowerdir=$1/$d:/$d" "/$d"; done
shift; exec "$@"`,
          'sh',
          options.shadow,
          process.execPath,
          CLI,
          ...full,
        ],
        { reject: false, env, ...(options.cwd && { cwd: options.cwd }) },
      )
    : await execa(process.execPath, [CLI, ...full], { reject: false, env, ...(options.cwd && { cwd: options.cwd }) });
  return { exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr) };
}

function json(run: Run): Record<string, any> {
  expect(run.exitCode, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as Record<string, any>;
}

const initrd = (out: string, extra: string[] = []) => ['build', '--preset', PRESET, '--compression', 'lz4', '--output', out, '--json', ...extra];
const sysext = (out: string, extra: string[] = []) => ['sysext', 'build', '--definition', 'lvm', '--preset', PRESET, '--output', out, '--sign-key', key, '--sign-cert', cert, '--json', ...extra];

describe('build tools: from packages, never through PATH', () => {
  beforeEach((ctx) => {
    if (skipReason) ctx.skip(skipReason);
  });
  beforeAll(async () => {
    if (skipReason) return;
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-tools-'));
    key = join(dir, 'db.key');
    cert = join(dir, 'db.crt');
    await execa('/usr/bin/openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '3650', '-subj', '/CN=mkinitrd-pkg tools test']);
    hostOnly = join(dir, 'host-tools.conf');
    await writeFile(hostOnly, '[Build]\nToolsTree=host\n');
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('gives identical images and sysexts on hosts with different tool versions; never runs a program planted in node_modules/.bin', { timeout: 1_800_000 }, async () => {
    // Planted programs, as under npx: the project's node_modules/.bin first on PATH, and the
    // working directory in the project. Used on the other machine below (tools tree and host).
    const project = join(dir, 'project');
    const bin = join(project, 'node_modules', '.bin');
    const planted = join(dir, 'planted-ran');
    await mkdir(bin, { recursive: true });
    for (const name of [...Object.keys(SHADOWED), 'xz', 'sh', 'unshare', 'setpriv', 'flock', 'mount', 'apt-get', 'dpkg', 'dpkg-deb', 'tar', 'cp', 'mkdir']) {
      await writeFile(join(bin, name), `#!/bin/sh\necho ${name} >> ${planted}\nexit 0\n`, { mode: 0o755 });
    }
    const npx = { cwd: project, env: { PATH: `${bin}:${process.env.PATH}` } };

    // The other machine's tools: another release's, from its tools tree (built here once).
    const other = json(await cli(initrd(join(dir, 'other.img'), ['--tools-tree', OTHER])));
    const otherRoot = await findToolsRoot(other.tools.packages);
    const shadow = join(dir, 'other-host');
    const marker = join(dir, 'other-host-ran');
    for (const [name, where] of Object.entries(SHADOWED)) {
      const tool = await withToolsRoot({ root: otherRoot, description: OTHER }, () => resolveTool(name));
      await mkdir(join(shadow, where), { recursive: true });
      await writeFile(
        join(shadow, where, name),
        `#!/bin/sh\necho ${name} >> ${shellQuote(marker)}\nexec ${[tool.file, ...tool.prefixArgs].map(shellQuote).join(' ')} "$@"\n`,
        { mode: 0o755 },
      );
    }

    const here = join(dir, 'here');
    const there = join(dir, 'there');
    await mkdir(here);
    await mkdir(there);
    const a = json(await cli(initrd(join(here, 'initrd.img'))));
    const aExt = json(await cli(sysext(join(here, 'lvm.raw'))));
    const b = json(await cli(initrd(join(there, 'initrd.img')), { shadow, ...npx }));
    const bExt = json(await cli(sysext(join(there, 'lvm.raw')), { shadow, ...npx }));
    expect(existsSync(marker), 'the other host tools ran although the build has a tools tree').toBe(false);

    expect(await sha256(join(there, 'initrd.img'))).toBe(await sha256(join(here, 'initrd.img')));
    expect(await sha256(join(there, 'lvm.raw'))).toBe(await sha256(join(here, 'lvm.raw')));
    expect(await readFile(join(there, 'lvm.roothash'), 'utf8')).toBe(await readFile(join(here, 'lvm.roothash'), 'utf8'));
    expect(b.tools).toEqual(a.tools);
    expect(bExt.tools).toEqual(aExt.tools);
    // The manifest names the tools' packages and versions.
    const manifest = JSON.parse(await readFile(join(here, 'initrd.img.manifest.json'), 'utf8'));
    expect(manifest.tools).toEqual(a.tools);
    const names = manifest.tools.packages.map((p: { name: string }) => p.name);
    for (const name of ['kmod', 'squashfs-tools', 'cryptsetup-bin', 'fdisk', 'openssl', 'lz4', 'libc6']) expect(names).toContain(name);
    const version = (list: Array<{ name: string; version: string }>, name: string) => list.find((p) => p.name === name)?.version;
    const otherVersions = Object.fromEntries(['squashfs-tools', 'lz4', 'kmod', 'cryptsetup-bin'].map((n) => [n, version(other.tools.packages, n)]));
    const ourVersions = Object.fromEntries(['squashfs-tools', 'lz4', 'kmod', 'cryptsetup-bin'].map((n) => [n, version(a.tools.packages, n)]));

    // With ToolsTree=host the other machine's tools are what runs: from its system
    // directories, still never the planted ones first on PATH.
    const c = json(await cli(initrd(join(there, 'host.img'), ['--tools-tree', 'host']), { shadow, ...npx }));
    const cExt = json(await cli(sysext(join(there, 'host.raw'), ['--config', hostOnly]), { shadow, ...npx }));
    expect(c.tools).toEqual({ tree: 'host', packages: [] });
    expect(cExt.tools.tree).toBe('host');
    const ran = new Set((await readFile(marker, 'utf8')).trim().split('\n'));
    for (const name of Object.keys(SHADOWED)) expect(ran, name).toContain(name);
    expect(existsSync(planted) ? await readFile(planted, 'utf8') : '', 'a planted program ran').toBe('');
    console.log(
      `tools tree ${a.tools.tree} (${JSON.stringify(ourVersions)}) vs other host (${JSON.stringify(otherVersions)}): identical initrd and sysext; ` +
        `host-tools initrd on the other host ${(await sha256(join(there, 'host.img'))) === (await sha256(join(here, 'initrd.img'))) ? 'equal to' : 'differs from'} the tools-tree one`,
    );
  });
});

/** The cached tools root whose packages are exactly `packages` (CACHE/tools/ID/root/.mkinitrd-pkg-tools.json). */
async function findToolsRoot(packages: unknown): Promise<string> {
  const base = join(SHARED, 'tools');
  for (const id of await readdir(base)) {
    const list = await readFile(join(base, id, 'root', '.mkinitrd-pkg-tools.json'), 'utf8').catch(() => undefined);
    if (list && JSON.stringify(JSON.parse(list)) === JSON.stringify(packages)) return join(base, id, 'root');
  }
  throw new Error('tools root not found in the cache');
}
