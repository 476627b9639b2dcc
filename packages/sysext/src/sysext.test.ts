import { execFileSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { UserError } from '@mkinitrd-pkg/common';
import { parseDefinition, loadDefinition, listDefinitions } from './definition.js';
import { extensionReleaseFields, parseOsRelease, readBaseRelease, readFileInRoot, renderOsRelease } from './os-release.js';
import { layoutPartitions, sfdiskScript, partitionName } from './ddi.js';
import { derivedUuid, rootHashUuids } from './uuid.js';
import { signaturePartition } from './image.js';
import { diffLayer, enforceSysextScope, findDeletions, removeEmptyDirs, STATE_PATHS } from './tree.js';

const isRoot = process.getuid?.() === 0;
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sysext-unit-'));
});

function thrown(fn: () => unknown): UserError {
  try {
    fn();
  } catch (error) {
    return error as UserError;
  }
  throw new Error('expected an error');
}

describe('definitions', () => {
  it('parse lists, continuation lines, scope; default name from the file', () => {
    const def = parseDefinition('[Extension]\nPackages=a b\n c\nScope=system\nRemoveFiles=/usr/x\n', '/d/foo.conf');
    expect(def).toMatchObject({ name: 'foo', packages: ['a', 'b', 'c'], scope: 'system', removeFiles: ['/usr/x'] });
    expect(parseDefinition('[Extension]\nName=bar\nPackages=a\n', '/d/foo.conf').scope).toBe('initrd');
  });
  it('errors name file:line', () => {
    expect(thrown(() => parseDefinition('[Extension]\nPackages=a\nFrob=1\n', '/d/x.conf')).message).toMatch(/^\/d\/x\.conf:3: unknown key Frob= in \[Extension\]/);
    expect(thrown(() => parseDefinition('[Other]\nPackages=a\n', '/d/x.conf')).message).toMatch(/^\/d\/x\.conf:2: unknown section \[Other\]/);
    expect(thrown(() => parseDefinition('[Extension]\nScope=both\nPackages=a\n', '/d/x.conf')).message).toMatch(/x\.conf:2: .*unknown scope "both"/);
    expect(thrown(() => parseDefinition('[Extension]\nPackages=-oFoo\n', '/d/x.conf')).message).toMatch(/x\.conf:2: .*invalid package name/);
    expect(thrown(() => parseDefinition('[Extension]\nScope=initrd\n', '/d/x.conf')).message).toMatch(/no Packages=/);
  });
  it('the shipped definitions parse and name Debian packages', async () => {
    const names = (await listDefinitions()).map((d) => d.name);
    expect(names).toEqual(expect.arrayContaining(['lvm', 'raid', 'nfs', 'tpm2', 'debug']));
    expect((await loadDefinition('lvm')).packages).toEqual(['lvm2']);
    expect((await loadDefinition('raid')).packages).toEqual(['mdadm']);
    expect((await loadDefinition('nfs')).packages).toEqual(['nfs-common']);
    expect((await loadDefinition('tpm2')).packages).toContain('tpm2-tools');
    await expect(loadDefinition('nosuch')).rejects.toThrow(/unknown extension definition "nosuch"/);
  });
});

describe('extension-release', () => {
  it('copies ID and VERSION_ID (or SYSEXT_LEVEL) from the base', () => {
    const base = { source: 'etc/os-release', fields: parseOsRelease('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n') };
    expect(extensionReleaseFields({ base, scope: 'initrd', architecture: 'x86-64' })).toEqual({ ID: 'debian', VERSION_ID: '12', ARCHITECTURE: 'x86-64', SYSEXT_SCOPE: 'initrd' });
    const leveled = { source: 'x', fields: { ID: 'fedora', VERSION_ID: '40', SYSEXT_LEVEL: '1.0' } };
    expect(extensionReleaseFields({ base: leveled, scope: 'system', architecture: 'x86-64' })).toEqual({ ID: 'fedora', SYSEXT_LEVEL: '1.0', ARCHITECTURE: 'x86-64', SYSEXT_SCOPE: 'system' });
    expect(extensionReleaseFields({ base, scope: 'initrd', architecture: 'x86-64', anyDistro: true }).ID).toBe('_any');
    expect(extensionReleaseFields({ base: { source: undefined, fields: {} }, scope: 'initrd', architecture: 'x86-64' }).ID).toBe('_any');
    expect(renderOsRelease({ ID: 'debian', NAME: 'a b' })).toBe('ID=debian\nNAME="a b"\n');
  });
  it('resolves the base os-release symlink inside the root, never on the host', async () => {
    const root = join(dir, 'rel');
    await mkdir(join(root, 'etc'), { recursive: true });
    await mkdir(join(root, 'usr/lib'), { recursive: true });
    await writeFile(join(root, 'usr/lib/os-release'), 'ID=inside\n');
    await symlink('../usr/lib/os-release', join(root, 'etc/os-release'));
    expect((await readBaseRelease(root)).fields.ID).toBe('inside');
    const hostile = join(dir, 'hostile');
    await mkdir(join(hostile, 'etc'), { recursive: true });
    await symlink('/etc/hostname', join(hostile, 'etc/os-release'));
    expect(await readFileInRoot(hostile, 'etc/os-release')).toBeUndefined();
    await writeFile(join(hostile, 'etc/initrd-release'), 'ID=initrd\n');
    expect(await readBaseRelease(hostile)).toEqual({ source: 'etc/initrd-release', fields: { ID: 'initrd' } });
  });
});

describe('DDI layout', () => {
  it('puts partitions at 1 MiB, 4 KiB-aligned, with room for the backup GPT', () => {
    const { partitions, diskBytes } = layoutPartitions([
      { role: 'root', name: 'x', uuid: 'u1', content: 'f', bytes: 5000 },
      { role: 'root-verity', name: 'x-verity', uuid: 'u2', content: 'f', bytes: 4096 },
    ]);
    expect(partitions.map((p) => [p.offset, p.size])).toEqual([[1 << 20, 8192], [(1 << 20) + 8192, 4096]]);
    expect(diskBytes % 4096).toBe(0);
    expect(diskBytes).toBeGreaterThanOrEqual((1 << 20) + 8192 + 4096 + 33 * 512);
    const script = sfdiskScript('0c6d3a04-0000-4000-8000-000000000000', partitions);
    expect(script).toContain('start=2048, size=16, type=4f68bce3-e8cd-4db1-96e7-fbcaf984b709, uuid=u1, name="x", attrs="GUID:60"');
    expect(partitionName('a'.repeat(40), '-verity-sig')).toHaveLength(36);
  });
  it("uses the image architecture's partition types (Discoverable Partitions Specification)", () => {
    const parts = [
      { role: 'root', name: 'x', uuid: 'u1', content: 'f', bytes: 5000 },
      { role: 'root-verity', name: 'x-verity', uuid: 'u2', content: 'f', bytes: 4096 },
      { role: 'root-verity-sig', name: 'x-verity-sig', uuid: 'u3', content: 'f', bytes: 4096 },
    ] as const;
    expect(layoutPartitions(parts, 'arm64').partitions.map((p) => p.type)).toEqual([
      'b921b045-1df0-41c3-af44-4c6f280d3fae',
      'df3300ce-d69f-4c92-978c-9bfb0f38d820',
      '6db69de6-29f4-4758-a7a5-962190f00ce3',
    ]);
    expect(layoutPartitions(parts).partitions.map((p) => p.type)).toEqual([
      '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
      '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
      '41092b05-9fc8-4523-994f-2def0408b176',
    ]);
    expect(() => layoutPartitions(parts, 'pdp11')).toThrow('no partition types known for architecture pdp11');
  });
  it('derives partition UUIDs from the root hash halves (DPS)', () => {
    const rh = '00112233445566778899aabbccddeeff' + 'ffeeddccbbaa99887766554433221100';
    expect(rootHashUuids(rh)).toEqual({ data: '00112233-4455-6677-8899-aabbccddeeff', verity: 'ffeeddcc-bbaa-9988-7766-554433221100' });
    expect(derivedUuid('a', 'b')).toBe(derivedUuid('a', 'b'));
    expect(derivedUuid('a', 'b')).not.toBe(derivedUuid('a', 'c'));
    expect(derivedUuid('a', 'b')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
  it('pads the signature JSON with NULs to 4 KiB', () => {
    const sig = signaturePartition('ab'.repeat(32), 'cd'.repeat(32), Buffer.from('sig'));
    expect(sig.length).toBe(4096);
    const json = JSON.parse(sig.toString('utf8').replace(/\0+$/, ''));
    expect(json).toEqual({ rootHash: 'ab'.repeat(32), certificateFingerprint: 'cd'.repeat(32), signature: Buffer.from('sig').toString('base64') });
  });
});

describe.skipIf(!isRoot)('upper layer → extension tree', () => {
  it('keeps new and changed entries, drops identical ones, whiteouts and package state; reports deletions', async () => {
    const t = join(dir, 'diff');
    const base = join(t, 'base');
    const upper = join(t, 'upper');
    const merged = join(t, 'merged');
    for (const d of ['usr/bin', 'usr/lib', 'etc/alternatives', 'var/lib/dpkg']) await mkdir(join(base, d), { recursive: true });
    await writeFile(join(base, 'usr/bin/same'), 'same');
    await writeFile(join(base, 'usr/bin/changed'), 'old');
    await writeFile(join(base, 'usr/bin/gone'), 'x');
    await writeFile(join(base, 'usr/lib/keep'), 'k');
    await symlink('usr/bin', join(base, 'bin'));
    await symlink('/usr/bin/more', join(base, 'etc/alternatives/pager'));
    // What an install on the overlay leaves in the upper layer.
    for (const d of ['usr/bin', 'usr/share/empty', 'usr/share/new', 'etc/alternatives', 'etc/lvm', 'var/lib/dpkg']) await mkdir(join(upper, d), { recursive: true });
    await writeFile(join(upper, 'usr/bin/same'), 'same');
    await writeFile(join(upper, 'usr/bin/changed'), 'new');
    await writeFile(join(upper, 'usr/bin/added'), 'added', { mode: 0o4755 });
    execFileSync('mknod', [join(upper, 'usr/bin/gone'), 'c', '0', '0']);
    await writeFile(join(upper, 'usr/share/new/file'), 'n');
    await symlink('/etc/alternatives/pager', join(upper, 'usr/bin/pager2'));
    await symlink('/usr/bin/less', join(upper, 'etc/alternatives/pager'));
    await writeFile(join(upper, 'etc/lvm/lvm.conf'), 'conf');
    await writeFile(join(upper, 'var/lib/dpkg/status'), 'state');
    const staging = join(t, 'staging');
    const diff = await diffLayer({ upper, base, staging, ignore: STATE_PATHS });
    expect(diff.identical).toBe(1);
    expect(diff.emptyNewDirs).toEqual(['usr/share/empty']);
    expect(diff.flattenedAlternatives).toEqual(['usr/bin/pager2']);
    expect(await readlink(join(staging, 'usr/bin/pager2'))).toBe('/usr/bin/less');
    expect((await readdir(join(staging, 'usr/bin'))).sort()).toEqual(['added', 'changed', 'pager2']);
    expect((await lstat(join(staging, 'usr/bin/added'))).mode & 0o7777).toBe(0o4755);
    expect(await readFile(join(staging, 'usr/bin/changed'), 'utf8')).toBe('new');
    await expect(lstat(join(staging, 'var'))).rejects.toThrow();
    await expect(lstat(join(staging, 'usr/lib'))).rejects.toThrow();

    // The merged view (here: built by hand) lacks the deleted file.
    for (const d of ['usr/bin', 'usr/lib', 'usr/share/new', 'etc/alternatives', 'etc/lvm', 'var/lib/dpkg']) await mkdir(join(merged, d), { recursive: true });
    for (const f of ['usr/bin/same', 'usr/bin/changed', 'usr/bin/added', 'usr/lib/keep', 'etc/alternatives/pager']) await writeFile(join(merged, f), '');
    expect(await findDeletions(upper, base, merged, STATE_PATHS)).toEqual(['bin', 'usr/bin/gone']);

    const scope = await enforceSysextScope(staging);
    expect(scope).toEqual({ droppedConfig: ['etc/alternatives/pager', 'etc/lvm/lvm.conf'], outside: [] });
    expect((await readdir(staging)).sort()).toEqual(['usr']);
  });

  it('refuses content outside /usr, /opt, /etc, /var and /root; drops empty directories there', async () => {
    const staging = join(dir, 'scope');
    await mkdir(join(staging, 'boot'), { recursive: true });
    await mkdir(join(staging, 'srv/empty'), { recursive: true });
    await mkdir(join(staging, 'usr/lib'), { recursive: true });
    await mkdir(join(staging, 'root'), { recursive: true });
    await writeFile(join(staging, 'boot/vmlinuz'), 'k');
    await writeFile(join(staging, 'root/.profile'), 'p');
    expect(await enforceSysextScope(staging)).toEqual({ droppedConfig: ['root/.profile'], outside: ['boot/vmlinuz'] });
    expect((await readdir(staging)).sort()).toEqual(['boot', 'usr']);
  });

  it('removes directories emptied by pruning, keeps packaged empty ones', async () => {
    const root = join(dir, 'empty');
    await mkdir(join(root, 'usr/share/doc/pkg'), { recursive: true });
    await mkdir(join(root, 'usr/lib/pkg/plugins'), { recursive: true });
    await mkdir(join(root, 'usr/bin'), { recursive: true });
    await writeFile(join(root, 'usr/bin/x'), 'x');
    expect(await removeEmptyDirs(root, ['usr/lib/pkg/plugins'])).toBe(3);
    expect((await readdir(join(root, 'usr'))).sort()).toEqual(['bin', 'lib']);
  });
});

describe('a base image identity is data, never a path', () => {
  it('os-release values outside os-release(5) syntax are refused when read', async () => {
    const root = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-osrel-'));
    await mkdir(join(root, 'etc'));
    const hostile = ['ID=/etc/shadow', 'ID=../../tmp/evil', 'ID="debian\\nID=x"', 'VERSION_ID=12/../..', 'VERSION_CODENAME=a b', 'SYSEXT_LEVEL=$(id)', 'ID_LIKE="debian /etc/x"', `ID=${'a'.repeat(200)}/`];
    for (const line of hostile) {
      await writeFile(join(root, 'etc/os-release'), `${line}\n`);
      await expect(readBaseRelease(root), line).rejects.toThrow(/the base's \/etc\/os-release: [A-Z_]+= is not a valid os-release value/);
    }
    await writeFile(join(root, 'etc/os-release'), 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID_LIKE="rhel fedora"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n');
    expect((await readBaseRelease(root)).fields.ID).toBe('debian');
  });
});
