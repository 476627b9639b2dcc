import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError } from './errors.js';
import { hasCommand, requireCommands, run } from './run.js';
import { elfInterpreter, realpathInRoot, resolveTool, withToolsRoot } from './tools.js';

let work: string;
let planted: string;
let marker: string;
const savedPath = process.env.PATH;

/** Programs someone could plant in node_modules/.bin (issue 10 item 4): each leaves a mark when run. */
const PLANTED = ['depmod', 'modinfo', 'sfdisk', 'veritysetup', 'mksquashfs', 'xz', 'openssl', 'sh', 'flock', 'unshare', 'not-on-this-system-xyz'];

beforeAll(async () => {
  work = await realpath(await mkdtemp(join(tmpdir(), 'tools-resolver-')));
  planted = join(work, 'project', 'node_modules', '.bin');
  marker = join(work, 'planted-ran');
  await mkdir(planted, { recursive: true });
  for (const name of PLANTED) {
    await writeFile(join(planted, name), `#!/bin/sh\necho ${name} >> ${marker}\necho planted\n`, { mode: 0o755 });
  }
  // As npx does: node_modules/.bin of the working directory first on PATH.
  process.env.PATH = `${planted}:${savedPath}`;
});
afterAll(async () => {
  process.env.PATH = savedPath;
  await rm(work, { recursive: true, force: true });
});

describe('programs are never found through the caller PATH', () => {
  it('runs the system depmod, not node_modules/.bin/depmod, even with cwd in the project', async () => {
    const result = await run('depmod', ['--version'], { cwd: join(work, 'project') });
    expect(result.command.startsWith('/')).toBe(true);
    expect(result.stdout).toContain('kmod');
    expect(existsSync(marker)).toBe(false);
  });

  it('gives children the fixed system PATH, so a shell pipeline does not find planted programs either', async () => {
    const result = await run('sh', ['-c', 'echo "$PATH"; xz --version | head -n1'], { cwd: join(work, 'project') });
    expect(result.stdout.split('\n')[0]).toBe('/usr/sbin:/usr/bin:/sbin:/bin');
    expect(result.stdout).toContain('xz (XZ Utils)');
    expect(existsSync(marker)).toBe(false);
  });

  it('resolves each program to a fixed system directory and reports a missing one with its package', async () => {
    for (const name of ['sfdisk', 'veritysetup', 'mksquashfs', 'openssl', 'flock', 'unshare']) {
      const tool = await resolveTool(name);
      expect(tool.path).toMatch(/^\/(usr\/)?s?bin\//);
      expect(tool.from).toBe('host');
    }
    expect(await hasCommand('not-on-this-system-xyz')).toBe(false);
    const error = await requireCommands(['not-on-this-system-xyz']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).code).toBe('MISSING_TOOL');
    expect((error as UserError).message).toContain('/usr/sbin /usr/bin /sbin /bin');
    const sq = await run('definitely-missing-mksquashfs-xyz', []).catch((e: unknown) => e);
    expect((sq as UserError).hint).toBe('apt-get install definitely-missing-mksquashfs-xyz');
    const veritysetup = await withToolsRoot({ root: join(work, 'empty-root'), description: 'test' }, () => resolveTool('veritysetup').catch((e: unknown) => e));
    expect((veritysetup as UserError).hint).toContain('add cryptsetup-bin to ToolsTreePackages=');
    expect(existsSync(marker)).toBe(false);
  });
});

/** The libraries a host program loads (ld.so --list), as absolute paths. */
function hostLibraries(program: string): string[] {
  const out = execFileSync('/usr/lib64/ld-linux-x86-64.so.2', ['--list', program], { encoding: 'utf8' });
  return [...out.matchAll(/=> (\/\S+)/g)].map((m) => m[1]!);
}

describe.skipIf(!existsSync('/usr/lib64/ld-linux-x86-64.so.2'))('a tools root runs with its own loader and libraries', () => {
  let root: string;
  beforeAll(async () => {
    // A tools root laid out as dpkg-deb -x leaves Debian 12 packages (no merged /usr):
    // the loader behind an absolute symlink, libraries in /lib/x86_64-linux-gnu, an
    // ld.so.conf.d include, a relative program symlink. Its "xz" is really echo, so the
    // output tells which one ran.
    root = join(work, 'tools-root');
    await mkdir(join(root, 'lib/x86_64-linux-gnu'), { recursive: true });
    await mkdir(join(root, 'lib64'), { recursive: true });
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await mkdir(join(root, 'bin'), { recursive: true });
    await mkdir(join(root, 'etc/ld.so.conf.d'), { recursive: true });
    await writeFile(join(root, 'etc/ld.so.conf'), 'include /etc/ld.so.conf.d/*.conf\n');
    await writeFile(join(root, 'etc/ld.so.conf.d/x86_64-linux-gnu.conf'), '# multiarch\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n');
    await copyFile(await realpath('/usr/lib64/ld-linux-x86-64.so.2'), join(root, 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'));
    await chmod(join(root, 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'), 0o755);
    await symlink('/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', join(root, 'lib64/ld-linux-x86-64.so.2'));
    for (const lib of hostLibraries('/usr/bin/echo')) await copyFile(lib, join(root, 'lib/x86_64-linux-gnu', lib.split('/').pop()!));
    await copyFile('/usr/bin/echo', join(root, 'bin/echo'));
    await chmod(join(root, 'bin/echo'), 0o755);
    await symlink('../../bin/echo', join(root, 'usr/bin/xz'));
    await writeFile(join(root, 'usr/bin/script-tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  });

  it('resolves symlinks as if the root were /', () => {
    expect(realpathInRoot(root, '/lib64/ld-linux-x86-64.so.2')).toBe(join(root, 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'));
    expect(realpathInRoot(root, '/usr/bin/xz')).toBe(join(root, 'bin/echo'));
    expect(realpathInRoot(root, '/usr/bin/../../../../etc/ld.so.conf')).toBe(join(root, 'etc/ld.so.conf'));
    expect(realpathInRoot(root, '/nope')).toBeUndefined();
    // Merged /usr without the links (trixie's libc6 ships only /usr/lib64/ld-linux-x86-64.so.2).
    expect(realpathInRoot(root, '/sbin/../usr/bin/xz')).toBeUndefined();
    expect(realpathInRoot(root, '/lib/x86_64-linux-gnu')).toBe(join(root, 'lib/x86_64-linux-gnu'));
    expect(elfInterpreter('/usr/bin/echo')).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(elfInterpreter(join(root, 'usr/bin/script-tool'))).toBeUndefined();
  });

  it('runs the root program through the root loader with only the root library directories', async () => {
    const tools = { root, description: 'test root' };
    const tool = await withToolsRoot(tools, () => resolveTool('xz'));
    expect(tool.from).toBe('tools');
    expect(tool.file).toBe(join(root, 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'));
    expect(tool.prefixArgs).toEqual(['--inhibit-cache', '--library-path', `${join(root, 'lib/x86_64-linux-gnu')}:${join(root, 'lib')}`, '--argv0', join(root, 'usr/bin/xz'), join(root, 'bin/echo')]);
    const result = await withToolsRoot(tools, () => run('xz', ['from', 'the', 'root'], { cwd: join(work, 'project') }));
    expect(result.stdout).toBe('from the root\n');
    // Every library it loads comes from the root.
    const list = execFileSync(tool.file, ['--inhibit-cache', '--library-path', tool.prefixArgs[2]!, '--list', join(root, 'bin/echo')], { encoding: 'utf8' });
    for (const m of list.matchAll(/=> (\/\S+)/g)) expect(m[1]!.startsWith(root + '/')).toBe(true);
    // The package machinery stays the host's; a program the root lacks is an error, not the host's.
    expect((await withToolsRoot(tools, () => resolveTool('sh'))).from).toBe('host');
    const missing = await withToolsRoot(tools, () => run('depmod', ['--version']).catch((e: unknown) => e));
    expect((missing as UserError).code).toBe('MISSING_TOOL');
    expect((missing as UserError).message).toContain('not in the tools root (test root)');
    const script = await withToolsRoot(tools, () => run('script-tool', []).catch((e: unknown) => e));
    expect((script as UserError).message).toContain('is a script');
    // Outside withToolsRoot, the host's again.
    expect((await resolveTool('xz')).path).toMatch(/^\/usr\/bin\/xz$/);
    expect(existsSync(marker)).toBe(false);
    expect(await readFile(join(root, 'etc/ld.so.conf'), 'utf8')).toContain('include');
    expect(dirname(tool.file)).toBe(join(root, 'lib/x86_64-linux-gnu'));
  });
});
