import { execFile } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readFile, readlink, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INITRD_TREE_DIR, installInitrdTree } from './initrd.js';

/**
 * The base's network-root generator (presets/initrd-tree/…/mkinitrd-pkg-netroot-generator)
 * run for real with /bin/sh, as systemd runs it, on command lines of dracut.cmdline(7);
 * test/netroot-boot.test.ts boots what it generates.
 */
const GENERATOR = join(INITRD_TREE_DIR, 'usr/lib/systemd/system-generators/mkinitrd-pkg-netroot-generator');
const run = promisify(execFile);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-netroot-gen-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function generate(cmdline: string) {
  const out = join(dir, String(n++));
  const [normal, early, late, network] = ['normal', 'early', 'late', 'network'].map((d) => join(out, d)) as [string, string, string, string];
  await run('/bin/sh', [GENERATOR, normal, early, late], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SYSTEMD_PROC_CMDLINE: cmdline, MKINITRD_PKG_NETWORK_DIR: network } });
  const read = (p: string) => readFile(p, 'utf8').catch(() => undefined);
  const list = async (d: string) => (await readdir(d, { recursive: true }).catch(() => [] as string[])).map(String).sort();
  return { normal, early, network, read, list };
}

describe('mkinitrd-pkg-netroot-generator', () => {
  it('is executable in the tree and stays executable in an image root', async () => {
    expect((await stat(GENERATOR)).mode & 0o111).not.toBe(0);
    const root = join(dir, 'root');
    await installInitrdTree(root);
    expect((await lstat(join(root, 'usr/lib/systemd/system-generators/mkinitrd-pkg-netroot-generator'))).mode & 0o777).toBe(0o755);
    expect((await lstat(join(root, 'usr/lib/mkinitrd-pkg/netroot'))).mode & 0o777).toBe(0o755);
    expect((await lstat(join(root, 'usr/lib/systemd/system/mkinitrd-pkg-sysext-activate.service'))).mode & 0o777).toBe(0o644);
  });

  it('root=nbd:SERVER:PORT/EXPORT:FSTYPE:FLAGS → sysroot.mount over /dev/nbd0 in the early dir, the connecting unit, the network', async () => {
    const g = await generate('console=ttyS0 root=nbd:10.0.2.2:10809/root:ext4:noatime,discard rw ip=dhcp');
    const mount = await g.read(join(g.early, 'sysroot.mount'));
    expect(mount).toMatch(/^What=\/dev\/nbd0$/m);
    expect(mount).toMatch(/^Type=ext4$/m);
    expect(mount).toMatch(/^Options=rw,noatime,discard$/m);
    expect(mount).toMatch(/^Requires=mkinitrd-pkg-netroot-nbd\.service$/m);
    const service = await g.read(join(g.early, 'mkinitrd-pkg-netroot-nbd.service'));
    expect(service).toMatch(/^ExecStart=\/usr\/lib\/mkinitrd-pkg\/netroot nbd '10\.0\.2\.2' '10809' 'root' \/dev\/nbd0$/m);
    expect(service).toMatch(/^After=network-online\.target systemd-sysext\.service mkinitrd-pkg-sysext-activate\.service/m);
    expect(await readlink(join(g.early, 'initrd-root-fs.target.requires/sysroot.mount'))).toBe('../sysroot.mount');
    expect(await g.read(join(g.early, 'dev-nbd0.device.d/50-mkinitrd-pkg-netroot.conf'))).toMatch(/JobRunningTimeoutSec=infinity/);
    expect(await g.list(g.normal)).toEqual(expect.arrayContaining([
      'initrd.target.wants/systemd-networkd.service',
      'network-online.target.wants/systemd-networkd-wait-online.service',
      'sysinit.target.wants/systemd-network-generator.service',
    ]));
    // ip= given: systemd-network-generator configures the network, no fallback.
    expect(await g.list(g.network)).toEqual([]);
  });

  it('the other nbd forms: PORT only (default export), an export name only (port 10809), netroot=; read-only and DHCP by default', async () => {
    const a = await generate('root=nbd:server.example:10809');
    expect(await a.read(join(a.early, 'mkinitrd-pkg-netroot-nbd.service'))).toMatch(/netroot nbd 'server\.example' '10809' '' \/dev\/nbd0/);
    const mount = await a.read(join(a.early, 'sysroot.mount'));
    expect(mount).toMatch(/^Type=auto$/m);
    expect(mount).toMatch(/^Options=ro$/m);
    // No ip=: DHCP on every Ethernet interface, as dracut does for a network root.
    expect(await a.read(join(a.network, '90-mkinitrd-pkg-netroot-dhcp.network'))).toMatch(/DHCP=yes/);
    const b = await generate('root=nbd:10.0.2.2:rootfs:xfs');
    expect(await b.read(join(b.early, 'mkinitrd-pkg-netroot-nbd.service'))).toMatch(/netroot nbd '10\.0\.2\.2' '10809' 'rootfs'/);
    const c = await generate('netroot=nbd:10.0.2.2:10809/root root=/dev/nbd0');
    expect(await c.read(join(c.early, 'sysroot.mount'))).toMatch(/What=\/dev\/nbd0/);
  });

  it('netroot=iscsi:SERVER::PORT:LUN:TARGET (a target with colons, and dracut\'s long form) + root=UUID= + rd.iscsi.initiator=', async () => {
    const g = await generate('root=UUID=6e657472-6f6f-4474-8e62-640000000002 netroot=iscsi:10.0.2.2::3260:1:iqn.2026-12.org.mkinitrd-pkg:root rd.iscsi.initiator=iqn.2026-12.org.mkinitrd-pkg:client ip=dhcp');
    const service = await g.read(join(g.early, 'mkinitrd-pkg-netroot-iscsi.service'));
    expect(service).toMatch(/^ExecStart=\/usr\/lib\/mkinitrd-pkg\/netroot iscsi '10\.0\.2\.2' '3260' 'iqn\.2026-12\.org\.mkinitrd-pkg:root' 'iqn\.2026-12\.org\.mkinitrd-pkg:client' '\/dev\/disk\/by-uuid\/6e657472-6f6f-4474-8e62-640000000002'$/m);
    // fstab-generator keeps sysroot.mount; a drop-in makes it fail with the login.
    expect(await g.read(join(g.early, 'sysroot.mount'))).toBeUndefined();
    expect(await g.read(join(g.early, 'sysroot.mount.d/50-mkinitrd-pkg-netroot.conf'))).toMatch(/^Requires=mkinitrd-pkg-netroot-iscsi\.service$/m);
    expect(await g.read(join(g.early, 'dev-disk-by\\x2duuid-6e657472\\x2d6f6f\\x2d4474\\x2d8e62\\x2d640000000002.device.d/50-mkinitrd-pkg-netroot.conf'))).toMatch(/JobRunningTimeoutSec=infinity/);
    expect(await g.list(g.normal)).toContain('initrd.target.wants/systemd-networkd.service');
    const long = await generate('root=LABEL=r netroot=iscsi:192.0.2.1:6:3261:default:eth0:0:iqn.2009-06.dracut:target0');
    expect(await long.read(join(long.early, 'mkinitrd-pkg-netroot-iscsi.service'))).toMatch(/netroot iscsi '192\.0\.2\.1' '3261' 'iqn\.2009-06\.dracut:target0' '' '\/dev\/disk\/by-label\/r'$/m);
    const bare = await generate('root=/dev/sda1 netroot=iscsi:server::::iqn.2009-06.dracut:t');
    expect(await bare.read(join(bare.early, 'mkinitrd-pkg-netroot-iscsi.service'))).toMatch(/netroot iscsi 'server' '3260' 'iqn\.2009-06\.dracut:t' '' '\/dev\/sda1'$/m);
  });

  it('root=nfs4:SERVER:/PATH:OPTIONS → sysroot.mount of Type=nfs4 in the early dir, after network-online.target, bounded; the network', async () => {
    const g = await generate('console=ttyS0 root=nfs4:10.0.2.2:/srv/root:port=20490,vers=4.1 ip=dhcp ro');
    const mount = await g.read(join(g.early, 'sysroot.mount'));
    expect(mount).toMatch(/^What=10\.0\.2\.2:\/srv\/root$/m);
    expect(mount).toMatch(/^Where=\/sysroot$/m);
    expect(mount).toMatch(/^Type=nfs4$/m);
    // Ours first (bounded RPC timeouts and mount.nfs retries, no lock daemon), the command line's last.
    expect(mount).toMatch(/^Options=ro,nolock,timeo=50,retrans=2,retry=1,port=20490,vers=4\.1$/m);
    expect(mount).toMatch(/^TimeoutSec=100$/m);
    expect(mount).toMatch(/^Wants=network-online\.target$/m);
    expect(mount).toMatch(/^After=network-online\.target systemd-sysext\.service mkinitrd-pkg-sysext-activate\.service .*mkinitrd-pkg-netroot-nfs\.service$/m);
    // Without the nfs extension: one line naming it, and sysroot.mount fails with it.
    expect(mount).toMatch(/^Requires=mkinitrd-pkg-netroot-nfs\.service$/m);
    expect(await g.read(join(g.early, 'mkinitrd-pkg-netroot-nfs.service'))).toMatch(/^ExecStart=\/usr\/lib\/mkinitrd-pkg\/netroot nfs$/m);
    expect(await readlink(join(g.early, 'initrd-root-fs.target.requires/sysroot.mount'))).toBe('../sysroot.mount');
    expect(await g.list(g.normal)).toEqual(expect.arrayContaining([
      'initrd.target.wants/systemd-networkd.service',
      'network-online.target.wants/systemd-networkd-wait-online.service',
    ]));
    expect(await g.list(g.network)).toEqual([]);
  });

  it('the other nfs forms: root=nfs: without options (DHCP by default), netroot=nfs:, root=/dev/nfs nfsroot=SERVER:/PATH[,OPTIONS], an [IPv6] server, rw', async () => {
    const a = await generate('root=nfs:server.example:/export/root');
    const mount = await a.read(join(a.early, 'sysroot.mount'));
    expect(mount).toMatch(/^What=server\.example:\/export\/root$/m);
    expect(mount).toMatch(/^Type=nfs$/m);
    expect(mount).toMatch(/^Options=ro,nolock,timeo=50,retrans=2,retry=1$/m);
    expect(await a.read(join(a.network, '90-mkinitrd-pkg-netroot-dhcp.network'))).toMatch(/DHCP=yes/);
    const b = await generate('netroot=nfs4:10.0.2.2:/root root=/dev/nfs rw');
    expect(await b.read(join(b.early, 'sysroot.mount'))).toMatch(/^What=10\.0\.2\.2:\/root\nWhere=\/sysroot\nType=nfs4\nOptions=rw,/m);
    const c = await generate('root=/dev/nfs nfsroot=10.0.2.2:/srv/nfs/root,vers=3,tcp ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off');
    const cm = await c.read(join(c.early, 'sysroot.mount'));
    expect(cm).toMatch(/^What=10\.0\.2\.2:\/srv\/nfs\/root$/m);
    expect(cm).toMatch(/^Type=nfs$/m);
    expect(cm).toMatch(/^Options=ro,nolock,timeo=50,retrans=2,retry=1,vers=3,tcp$/m);
    expect(await c.list(c.network)).toEqual([]);
    const d = await generate('root=/dev/nfs nfsroot=10.0.2.2:/root');
    expect(await d.read(join(d.early, 'sysroot.mount'))).toMatch(/^What=10\.0\.2\.2:\/root$/m);
    const e = await generate('root=nfs:[fd00::2]:/root:vers=4.2');
    const em = await e.read(join(e.early, 'sysroot.mount'));
    expect(em).toMatch(/^What=\[fd00::2\]:\/root$/m);
    expect(em).toMatch(/^Options=ro,nolock,timeo=50,retrans=2,retry=1,vers=4\.2$/m);
  });

  it('nfs without a server or a path, root=/dev/nfs without nfsroot=: no units (the error goes to the kernel log)', async () => {
    for (const cmdline of ['root=nfs:/srv/root', 'root=nfs4:server.example', 'root=/dev/nfs']) {
      const g = await generate(cmdline);
      expect([...(await g.list(g.early)), ...(await g.list(g.normal))], cmdline).toEqual([]);
    }
  });

  it('rd.neednet=1 or ip= alone start the network, and nothing else; no network option: nothing at all', async () => {
    const a = await generate('root=UUID=0a0b rd.neednet=1');
    expect(await a.list(a.early)).toEqual([]);
    expect(await a.list(a.normal)).toContain('initrd.target.wants/systemd-networkd.service');
    const b = await generate('root=/dev/vda ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off');
    expect(await b.list(b.normal)).toContain('network-online.target.wants/systemd-networkd-wait-online.service');
    expect(await b.list(b.network)).toEqual([]);
    const c = await generate('root=/dev/vda rw quiet');
    expect([...(await c.list(c.normal)), ...(await c.list(c.early)), ...(await c.list(c.network))]).toEqual([]);
  });

  it('the helper without the client extension: one line naming the extension, exit 1 (the unit fails, the boot ends in the emergency shell)', async () => {
    const helper = join(INITRD_TREE_DIR, 'usr/lib/mkinitrd-pkg/netroot');
    const empty = join(dir, 'empty-path');
    await mkdir(empty, { recursive: true });
    for (const [args, extension] of [
      [['nbd', '10.0.2.2', '10809', 'root', '/dev/nbd0'], 'nbd'],
      [['iscsi', '10.0.2.2', '3260', 'iqn.2026-12.org.mkinitrd-pkg:root', '', '/dev/sda'], 'iscsi'],
      [['nfs'], 'nfs'],
    ] as const) {
      const r = await run('/bin/sh', [helper, ...args], { env: { PATH: empty } }).then(
        () => ({ code: 0, stdout: '' }),
        (e: { code: number; stdout: string }) => e,
      );
      expect(r.code).toBe(1);
      expect(r.stdout.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^mkinitrd-pkg-netroot: .* is not in this initrd: add the ${extension} extension`))]);
    }
  });
});
