// QEMU boot helpers shared by the end-to-end tests (test/) and the benchmarks (scripts/bench/).
import { spawn, execFileSync } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readdir, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The newest Debian kernel installed on this machine (CI installs linux-image-amd64). */
export async function hostKernel() {
  const names = (await readdir('/boot').catch(() => [])).filter((n) => n.startsWith('vmlinuz-')).sort();
  const last = names.at(-1);
  if (!last) return undefined;
  return { version: last.slice('vmlinuz-'.length), vmlinuz: join('/boot', last) };
}

export const ROOT_MARKER = 'MKINITRD-PKG-REAL-ROOT-REACHED';

/**
 * A real root filesystem: ext4 made with mkfs.ext4 -d (no mount), holding a static
 * busybox and an init that prints a marker on the console and powers off (after the
 * shell lines `before`, e.g. to print what the booted system sees).
 */
export async function makeTestRoot({ uuid, label, before = '' }) {
  const dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-root-'));
  const tree = join(dir, 'tree');
  for (const d of ['bin', 'sbin', 'etc', 'proc', 'sys', 'dev', 'run', 'tmp']) await mkdir(join(tree, d), { recursive: true });
  await copyFile('/bin/busybox', join(tree, 'bin/busybox'));
  await chmod(join(tree, 'bin/busybox'), 0o755);
  await symlink('busybox', join(tree, 'bin/sh'));
  // switch-root refuses a root without os-release (design.md §4).
  await writeFile(join(tree, 'etc/os-release'), 'ID=testroot\nNAME="mkinitrd-pkg test root"\n');
  await writeFile(
    join(tree, 'sbin/init'),
    `#!/bin/sh
exec >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
${before}
echo "${ROOT_MARKER} pid=$$"
/bin/busybox sync
/bin/busybox poweroff -f
`,
    { mode: 0o755 },
  );
  const image = join(dir, 'root.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-U', uuid, '-L', label, '-d', tree, image, '64M']);
  return image;
}

/**
 * Boot a kernel + initrd under TCG (the only accelerator that works here, design.md §4).
 * One vCPU: with two, multi-threaded TCG once let a vCPU run a stale int3 while the kernel
 * patched a static key (text_poke_bp), and trixie's 6.12 oopsed in sched_clock_cpu before
 * /init (CI run of stop 18); one vCPU has no cross-modifying-code race.
 * `drives`: more virtio disks after `rootImage`, each a path (written to) or
 * `{ file, snapshot: true }` (writes go to a temporary overlay: a cached disk stays as it was).
 */
export function bootQemu({ kernel, initrd, rootImage, drives = [], append, memoryMb = 1024, net }) {
  const args = [
    '-accel', 'tcg', '-smp', '1', '-m', String(memoryMb),
    '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio', '-monitor', 'none',
    '-kernel', kernel, '-initrd', initrd,
    '-append', `console=ttyS0 panic=-1 ${append}`,
  ];
  if (rootImage) args.push('-drive', `file=${rootImage},format=raw,if=virtio`);
  for (const d of drives) {
    const { file, snapshot = false } = typeof d === 'string' ? { file: d } : d;
    args.push('-drive', `file=${file},format=raw,if=virtio${snapshot ? ',snapshot=on' : ''}`);
  }
  if (net) args.push(...userNetArgs(net));
  return spawnQemu(args);
}

/**
 * One virtio NIC on QEMU's user-mode network (`-netdev user`, slirp), the only network the
 * tests use (design.md §4b): the guest is 10.0.2.15 by QEMU's built-in DHCP, and the
 * host's loopback is 10.0.2.2 — test servers bind to 127.0.0.1 and nothing else. No tap
 * device, bridge or real address. `net`: true, or `{ mac }` to give the NIC a known MAC
 * (for ifname=).
 */
export function userNetArgs(net) {
  const mac = typeof net === 'object' && net.mac ? `,mac=${net.mac}` : '';
  return ['-netdev', 'user,id=net0,ipv6=off', '-device', `virtio-net-pci,netdev=net0${mac}`];
}

/** OVMF (Debian's ovmf package): plain, and Secure Boot with a test PK/KEK/db (design.md §4b). */
export const OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  secureCode: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
  /** Secure Boot on; PK/KEK/db = /usr/share/ovmf/PkKek-1-snakeoil.{key,pem} (password "snakeoil"). */
  snakeoilVars: '/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd',
  snakeoilKey: '/usr/share/ovmf/PkKek-1-snakeoil.key',
  snakeoilCert: '/usr/share/ovmf/PkKek-1-snakeoil.pem',
};

/**
 * A FAT ESP image holding `efi` as EFI/BOOT/BOOTX64.EFI (the removable-media path the
 * firmware boots without a Boot#### entry), plus `extra` files at ESP paths. Made with
 * mkfs.vfat -C and mtools: nothing is mounted.
 */
export async function makeEsp({ efi, extra = {}, sizeMb = 96, dir }) {
  const base = dir ?? (await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-esp-')));
  const image = join(base, 'esp.img');
  execFileSync('mkfs.vfat', ['-C', '-n', 'ESP', '-i', '12345678', image, String(sizeMb * 1024)], { stdio: 'ignore' });
  const made = new Set();
  const mmd = (path) => {
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (made.has(d)) continue;
      execFileSync('mmd', ['-i', image, `::/${d}`]);
      made.add(d);
    }
  };
  mmd('EFI/BOOT');
  execFileSync('mcopy', ['-i', image, efi, '::/EFI/BOOT/BOOTX64.EFI']);
  for (const [to, from] of Object.entries(extra)) {
    mmd(to.split('/').slice(0, -1).join('/'));
    execFileSync('mcopy', ['-i', image, from, `::/${to}`]);
  }
  return image;
}

/**
 * Boot a disk with UEFI firmware (OVMF) under TCG: the ESP as the first virtio disk and
 * the root as the second (/dev/vdb). `vars` is copied: the firmware writes to it. With
 * `secure`, the SMM-protected Secure Boot firmware (q35, smm=on, secure pflash).
 */
export async function bootQemuUefi({ esp, rootImage, vars, secure = false, memoryMb = 1024 }) {
  const varsCopy = join(await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-vars-')), 'vars.fd');
  await copyFile(vars ?? (secure ? OVMF.snakeoilVars : OVMF.vars), varsCopy);
  const args = [
    '-accel', 'tcg', '-smp', '1', '-m', String(memoryMb),
    '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio', '-monitor', 'none',
    '-machine', secure ? 'q35,smm=on' : 'q35',
    ...(secure ? ['-global', 'driver=cfi.pflash01,property=secure,value=on'] : []),
    '-drive', `if=pflash,format=raw,unit=0,file=${secure ? OVMF.secureCode : OVMF.code},readonly=on`,
    '-drive', `if=pflash,format=raw,unit=1,file=${varsCopy}`,
    '-drive', `file=${esp},format=raw,if=virtio`,
  ];
  if (rootImage) args.push('-drive', `file=${rootImage},format=raw,if=virtio`);
  return spawnQemu(args);
}

function spawnQemu(args) {
  const started = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let buffer = '';
  let done = false;
  const waiters = new Set();
  const onData = (chunk) => {
    buffer += chunk.toString('utf8');
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise((resolve) =>
    child.on('exit', (code) => {
      done = true;
      for (const w of waiters) w();
      resolve(code);
    }),
  );
  return {
    process: child,
    started,
    exited,
    output: () => buffer,
    type: (text) => child.stdin.write(text),
    kill: () => {
      if (!done) child.kill('SIGKILL');
    },
    /** Resolves with the console text after `from` once `pattern` appears; rejects on timeout or exit. */
    waitFor(pattern, timeoutMs, from = 0) {
      return new Promise((resolve, reject) => {
        const test = () => {
          const tail = buffer.slice(from);
          if (typeof pattern === 'string' ? tail.includes(pattern) : pattern.test(tail)) {
            cleanup();
            resolve(tail);
          } else if (done) {
            cleanup();
            reject(new Error(`QEMU exited before ${String(pattern)} appeared; console:\n${buffer.slice(-4000)}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${String(pattern)}; console:\n${buffer.slice(-4000)}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(test);
        };
        waiters.add(test);
        test();
      });
    },
  };
}

/**
 * From "Press Enter for maintenance" to a root shell prompt. Enter is pressed again
 * every few seconds: a key typed while sulogin sets up the terminal can be flushed.
 */
export async function enterEmergencyShell(session, timeoutMs = 240_000) {
  // systemd 252: "Press Enter for maintenance"; 257: "Press Enter for system maintenance".
  await session.waitFor(/Press Enter for (system )?maintenance/, timeoutMs);
  for (let attempt = 0; attempt < 12; attempt++) {
    const mark = session.output().length;
    session.type('\r');
    try {
      await session.waitFor(/# /, 5_000, mark);
      return;
    } catch (error) {
      if (session.process.exitCode !== null) throw error;
    }
  }
  throw new Error(`no shell prompt after pressing Enter; console:\n${session.output().slice(-3000)}`);
}
