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

/** Boot a kernel + initrd under TCG (the only accelerator that works here, design.md §4). */
export function bootQemu({ kernel, initrd, rootImage, append, memoryMb = 1024 }) {
  const args = [
    '-accel', 'tcg', '-smp', '2', '-m', String(memoryMb),
    '-nographic', '-no-reboot', '-nodefaults', '-serial', 'stdio', '-monitor', 'none',
    '-kernel', kernel, '-initrd', initrd,
    '-append', `console=ttyS0 panic=-1 ${append}`,
  ];
  if (rootImage) args.push('-drive', `file=${rootImage},format=raw,if=virtio`);
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
