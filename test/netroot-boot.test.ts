import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootQemu, enterEmergencyShell, makeTestRoot, ROOT_MARKER } from '../scripts/lib/qemu.mjs';
import { mkinitrdPkg } from './lib/cli.js';
import { concatInitrds, EPOCH, TEST_CACHE } from './lib/storage.js';

/**
 * Issue 16: network roots on the generic base + the network and nbd extensions, booted in
 * QEMU with the trixie kernel of the preset. The only network is QEMU's user mode (slirp):
 * the servers listen on 127.0.0.1, which the guest reaches as 10.0.2.2; nothing else.
 * Four boots (few: each is a minute or more under TCG): NBD with DHCP (QEMU's built-in
 * server), NBD with the server down (no ip=: DHCP by default; the initrd gives up after
 * bounded attempts and ends in the emergency shell), iSCSI with a static ip= on an
 * interface named by ifname=, and NFSv4 (nfs-ganesha, userspace) with DHCP.
 */
const NBD_SERVER = '/usr/bin/nbd-server';
const TGTD = '/usr/sbin/tgtd';
const exists = (p: string) => stat(p).then(() => true, () => false);
const canRun = process.getuid?.() === 0 && (await exists(NBD_SERVER));
const canIscsi = canRun && (await exists(TGTD));
/** nfs-ganesha and its VFS backend (Debian: nfs-ganesha, nfs-ganesha-vfs). */
const GANESHA = '/usr/bin/ganesha.nfsd';
const canNfs = canRun && (await exists(GANESHA)) && (await exists('/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so'));
const TARGET = 'iqn.2026-12.org.mkinitrd-pkg:root';
const ISCSI_ROOT_UUID = '6e657472-6f6f-4474-8e62-640000000002';
const MAC = '52:54:00:6e:62:64';

const times: Record<string, number> = {};
let dir = '';
let kernel = '';
let initrd = '';
let iscsiInitrd = '';
let nfsInitrd = '';
/** The test root's tree (makeTestRoot keeps it next to the image), exported over NFS. */
let nfsTree = '';
let rootImage = '';
const servers = new Set<ChildProcess>();
/** tgtd's management sockets (/run/tgtd/socket.N and .N.lock): not removed when it is killed. */
const tgtSockets: string[] = [];
/** makeTestRoot's temporary directories. */
const rootDirs: string[] = [];

async function cli(args: string[]): Promise<void> {
  const r = await mkinitrdPkg(args);
  expect(r.exitCode, `mkinitrd-pkg ${args.join(' ')}\n${r.stderr}`).toBe(0);
}

/** A TCP port free on 127.0.0.1 right now (bound and released). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * Whether something listens on 127.0.0.1:port (state 0A in /proc/net/tcp, or in tcp6 as
 * ::ffff:127.0.0.1, where ganesha binds its IPv4 address): no probe connection.
 */
async function listening(port: number): Promise<boolean> {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const want = [`0100007F:${hex}`, `0000000000000000FFFF00000100007F:${hex}`];
  const tables = await Promise.all(['/proc/net/tcp', '/proc/net/tcp6'].map((t) => readFile(t, 'utf8').catch(() => '')));
  return tables.join('\n').split('\n').some((line) => {
    const f = line.trim().split(/\s+/);
    return want.includes(f[1] ?? '') && f[3] === '0A';
  });
}

/**
 * nbd-server on 127.0.0.1 exporting the test root as "root", copy-on-write (the image is
 * never written), in the foreground (-d) so that it ends with the test; waits (at most
 * 10 s) until it listens.
 */
async function startNbdServer(): Promise<number> {
  const port = await freePort();
  const conf = join(dir, `nbd-${port}.conf`);
  await writeFile(conf, `[generic]\nlistenaddr = 127.0.0.1\nport = ${port}\nallowlist = false\n[root]\nexportname = ${rootImage}\ncopyonwrite = true\n`);
  const server = spawn(NBD_SERVER, ['-C', conf, '-d'], { stdio: 'ignore' });
  servers.add(server);
  for (let i = 0; i < 100 && server.exitCode === null; i++) {
    if (await listening(port)) return port;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nbd-server did not listen on 127.0.0.1:${port}`);
}

/**
 * tgtd (the userspace iSCSI target) with its portal on 127.0.0.1 only, in the foreground,
 * its management socket numbered after the port (no clash with another tgtd); one target
 * with the test root (a copy: tgt opens it read-write) as LUN 1, open to any initiator
 * (only this machine can reach it).
 */
async function startIscsiTarget(): Promise<number> {
  const port = await freePort();
  const lun = join(dir, `iscsi-${port}.img`);
  const made = await makeTestRoot({ uuid: ISCSI_ROOT_UUID, label: 'iscsiroot' });
  rootDirs.push(dirname(made));
  await copyFile(made, lun);
  // tgtd takes small management numbers only (41182 is "out of range").
  const control = String(1 + (port % 4000));
  tgtSockets.push(`/run/tgtd/socket.${control}`, `/run/tgtd/socket.${control}.lock`);
  const server = spawn(TGTD, ['-f', '-C', control, '--iscsi', `portal=127.0.0.1:${port}`], { stdio: 'ignore' });
  servers.add(server);
  for (let i = 0; i < 100 && server.exitCode === null && !(await listening(port)); i++) await new Promise((r) => setTimeout(r, 100));
  if (!(await listening(port))) throw new Error(`tgtd did not listen on 127.0.0.1:${port}`);
  const tgtadm = (...args: string[]) => execa('tgtadm', ['-C', control, '--lld', 'iscsi', ...args]);
  await tgtadm('--op', 'new', '--mode', 'target', '--tid', '1', '-T', TARGET);
  await tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', '1', '-b', lun);
  await tgtadm('--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL');
  return port;
}

/**
 * nfs-ganesha (userspace NFS server; the host kernel's nfsd is not relied on) exporting the
 * test root's tree read-only as /root, NFSv4 over TCP only, on 127.0.0.1:PORT — no
 * rpcbind, NLM, rquota or UDP (registering with a portmapper fails and is logged, not
 * fatal). Its configuration, log, pid file and recovery directory are under the test's
 * temporary directory; in the foreground (-F) so that it ends with the test. Minor
 * versions 0 and 1: with 4.2 negotiated (ganesha 4.3 of Debian 12 and trixie's 6.12
 * client), files read back corrupt — busybox failed with "Exec format error" after the
 * mount succeeded; 4.1 boots. Waits (at most 10 s) until it listens.
 */
async function startNfsServer(): Promise<number> {
  const port = await freePort();
  const conf = join(dir, `ganesha-${port}.conf`);
  const log = join(dir, `ganesha-${port}.log`);
  // Parameters of ganesha 4.3: ganesha-core-config(8), ganesha-export-config(8).
  await writeFile(conf, `NFS_CORE_PARAM {
  Protocols = 4; NFS_Port = ${port}; Bind_addr = 127.0.0.1;
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
}
NFSV4 { Graceless = true; Minor_Versions = 0, 1; RecoveryBackend = fs; RecoveryRoot = ${join(dir, `ganesha-${port}-recovery`)}; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT {
  Export_Id = 1; Path = ${nfsTree}; Pseudo = /root;
  Access_Type = RO; Squash = No_Root_Squash; Protocols = 4; Transports = TCP; SecType = sys;
  FSAL { Name = VFS; }
}
`);
  const server = spawn(GANESHA, ['-F', '-f', conf, '-L', log, '-p', join(dir, `ganesha-${port}.pid`), '-N', 'NIV_EVENT'], { stdio: 'ignore' });
  servers.add(server);
  for (let i = 0; i < 100 && server.exitCode === null && !(await listening(port)); i++) await new Promise((r) => setTimeout(r, 100));
  if (!(await listening(port))) throw new Error(`ganesha.nfsd did not listen on 127.0.0.1:${port}:\n${(await readFile(log, 'utf8').catch(() => '')).slice(-2000)}`);
  return port;
}

function stopServers(): void {
  for (const s of servers) if (s.exitCode === null) s.kill('SIGKILL');
  servers.clear();
}

/** Boot with one user-mode NIC until the root's marker; returns seconds and the console. */
async function bootNet(append: string, mac?: string, image = initrd): Promise<{ seconds: number; output: string }> {
  const session = bootQemu({ kernel, initrd: image, net: mac ? { mac } : true, append: `no_timer_check systemd.journald.forward_to_console=1 ${append}` });
  try {
    await session.waitFor(ROOT_MARKER, 600_000);
    const seconds = (performance.now() - session.started) / 1000;
    await session.exited;
    return { seconds, output: session.output() };
  } finally {
    session.kill();
  }
}

function time(name: string, seconds: number): void {
  times[name] = Math.round(seconds * 10) / 10;
  console.log(`netroot: ${name}: ${seconds.toFixed(1)} s`);
}

describe.skipIf(!canRun)('network roots: generic base + network + nbd extensions (trixie kernel, TCG)', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-netroot-'));
    kernel = join(dir, 'vmlinuz');
    const base = join(dir, 'base.img');
    await cli(['build', '--preset', 'debian', '--kernel-output', kernel, '--output', base, '--source-date-epoch', EPOCH, '--cache-dir', TEST_CACHE]);
    /** The extension `definition` built on the base (its size logged). */
    const extension = async (definition: string): Promise<string> => {
      const out = join(dir, `${definition}.raw`);
      await cli(['sysext', 'build', '--definition', definition, '--base', base, '--preset', 'debian', '--output', out, '--cache-dir', TEST_CACHE, '--source-date-epoch', EPOCH]);
      console.log(`netroot: ${definition}.raw ${(await stat(out)).size} bytes`);
      return out;
    };
    /** The base + one `sysext pack` cpio of the network extension and a client's, as one initrd file. */
    const withClient = async (network: string, client: string): Promise<string> => {
      const packed = join(dir, `network-${client}.cpio`);
      await cli(['sysext', 'pack', network, await extension(client), '--output', packed]);
      console.log(`netroot: network-${client}.cpio ${(await stat(packed)).size} bytes`);
      return concatInitrds(join(dir, `initrd-${client}.img`), [base, packed]);
    };
    const network = await extension('network');
    initrd = await withClient(network, 'nbd');
    if (canIscsi) iscsiInitrd = await withClient(network, 'iscsi');
    if (canNfs) {
      nfsInitrd = await withClient(network, 'nfs');
      const made = await makeTestRoot({ uuid: '6e657472-6f6f-4474-8e62-640000000003', label: 'nfsroot' });
      rootDirs.push(dirname(made));
      nfsTree = join(dirname(made), 'tree');
    }
    rootImage = await makeTestRoot({ uuid: '6e657472-6f6f-4474-8e62-640000000001', label: 'netroot' });
    rootDirs.push(dirname(rootImage));
  }, 1_800_000);

  afterAll(async () => {
    stopServers();
    for (const socket of tgtSockets) await rm(socket, { force: true });
    for (const d of rootDirs) await rm(d, { recursive: true, force: true });
    console.log(`network roots, time to root (TCG): ${JSON.stringify(times)}`);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('1. root=nbd:10.0.2.2:PORT/root:ext4 with ip=dhcp (QEMU\'s DHCP server)', async () => {
    const port = await startNbdServer();
    try {
      const r = await bootNet(`root=nbd:10.0.2.2:${port}/root:ext4 ip=dhcp ro`);
      expect(r.output).toMatch(/eth0: DHCPv4 address 10\.0\.2\.15\/24/);
      expect(r.output).toMatch(/EXT4-fs \(nbd0\): mounted filesystem 6e657472-6f6f-4474-8e62-640000000001 ro/);
      time('1 nbd dhcp', r.seconds);
    } finally {
      stopServers();
    }
  }, 900_000);

  it('2. server down: bounded attempts, then the emergency shell (no ip=: DHCP by default)', async () => {
    const port = await freePort(); // nothing listens there
    const session = bootQemu({ kernel, initrd, net: true, append: `no_timer_check systemd.journald.forward_to_console=1 root=nbd:10.0.2.2:${port}/root ro` });
    try {
      await session.waitFor(/mkinitrd-pkg-netroot: connecting \/dev\/nbd0/, 600_000);
      const from = (performance.now() - session.started) / 1000;
      await session.waitFor(/nbd-client 10\.0\.2\.2:\d+ failed 5 times, giving up/, 300_000);
      const gaveUp = (performance.now() - session.started) / 1000;
      await enterEmergencyShell(session, 300_000);
      const mark = session.output().length;
      session.type('echo NET-$((6*7))\r');
      await session.waitFor('NET-42', 60_000, mark);
      expect(session.output()).toMatch(/eth0: Configuring with \/run\/systemd\/network\/90-mkinitrd-pkg-netroot-dhcp\.network/);
      expect(session.output()).not.toContain(ROOT_MARKER);
      time('3 server down: connect to give-up', gaveUp - from);
      time('3 server down: boot to emergency shell', (performance.now() - session.started) / 1000);
    } finally {
      session.kill();
    }
  }, 900_000);

  it.skipIf(!canIscsi)('3. iSCSI with a static ip= on an interface named by ifname=: netroot=iscsi:10.0.2.2::PORT:1:TARGET, root=UUID= on the LUN (tgt)', async () => {
    const port = await startIscsiTarget();
    try {
      const r = await bootNet(
        `ifname=bootnet:${MAC} ip=10.0.2.15::10.0.2.2:255.255.255.0::bootnet:off root=UUID=${ISCSI_ROOT_UUID} netroot=iscsi:10.0.2.2::${port}:1:${TARGET} rd.iscsi.initiator=iqn.2026-12.org.mkinitrd-pkg:client ro`,
        MAC,
        iscsiInitrd,
      );
      expect(r.output).toMatch(/bootnet: renamed from eth0/);
      expect(r.output).toMatch(/bootnet: Configuring with \/run\/systemd\/network\/70-bootnet\.network/);
      expect(r.output).not.toMatch(/DHCPv4 address/);
      expect(r.output).toMatch(new RegExp(`iscsistart: Connection1:0 to \\[target: ${TARGET.replaceAll('.', '\\.')}, portal: 10\\.0\\.2\\.2,${port}\\] through \\[iface: default\\] is operational now`));
      expect(r.output).toMatch(new RegExp(`EXT4-fs \\(sd[a-z]\\): mounted filesystem ${ISCSI_ROOT_UUID} ro`));
      expect(r.output).not.toMatch(/Failed to start/);
      time('3 iscsi static ip=', r.seconds);
    } finally {
      stopServers();
    }
  }, 900_000);

  it.skipIf(!canNfs)('4. NFSv4 root with ip=dhcp: root=nfs4:10.0.2.2:/root:port=PORT (nfs-ganesha)', async () => {
    const port = await startNfsServer();
    try {
      const r = await bootNet(`root=nfs4:10.0.2.2:/root:port=${port} ip=dhcp ro`, undefined, nfsInitrd);
      expect(r.output).toMatch(/eth0: DHCPv4 address 10\.0\.2\.15\/24/);
      expect(r.output).toMatch(/Mounted sysroot\.mount - \/sysroot on NFS 10\.0\.2\.2:\/root/);
      expect(r.output).not.toMatch(/Failed to start|Exec format error/);
      time('4 nfs4 dhcp', r.seconds);
    } finally {
      stopServers();
    }
  }, 900_000);
});
