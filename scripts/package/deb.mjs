#!/usr/bin/env node
// The Debian package: mkinitrd-pkg as the system's initramfs generator.
//
//   node scripts/package/deb.mjs [OUT_DIR]   (default: dist/deb) → OUT_DIR/mkinitrd-pkg_VERSION_all.deb
//
// Built with plain dpkg-deb from a staging tree, reproducibly: SOURCE_DATE_EPOCH (else
// the last commit's date) for every mtime and the ar/tar headers, owners root:root
// (--root-owner-group), modes set explicitly (umask-independent), files in sorted order
// (dpkg-deb sorts), gzip -n for the compressed docs. Two builds give the same bytes.
//
// Contents (scripts/package/debian/ holds the hand-written parts):
//   /usr/lib/mkinitrd-pkg/          the bundle (scripts/package/bundle.mjs) + kernel-hook
//   /usr/bin/mkinitrd-pkg           → ../lib/mkinitrd-pkg/bin/run.js
//   /usr/lib/kernel/install.d/50-mkinitrd-pkg.install   the plugin, set to /usr/bin/mkinitrd-pkg
//   /etc/kernel/postinst.d/mkinitrd-pkg, /etc/kernel/postrm.d/mkinitrd-pkg   (conffiles)
//   /etc/kernel/install.d/{55,85}-initrd.install → /dev/null (see below)
//   /etc/mkinitrd-pkg/mkinitrd-pkg.conf                 (conffile)
//   /var/lib/mkinitrd-pkg/ (manifests), /usr/share/doc, /usr/share/man
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, cp, lstat, mkdir, readFile, readdir, rename, rm, symlink, utimes, lutimes, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEBIAN = join(ROOT, 'scripts/package/debian');
const out = resolve(process.argv[2] ?? join(ROOT, 'dist/deb'));

const version = JSON.parse(await readFile(join(ROOT, 'packages/cli/package.json'), 'utf8')).version;
const epoch = Number(
  process.env.SOURCE_DATE_EPOCH || execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: ROOT, encoding: 'utf8' }).trim(),
);
if (!Number.isInteger(epoch) || epoch <= 0) throw new Error(`bad SOURCE_DATE_EPOCH ${epoch}`);

const stage = join(out, 'staging');
await rm(stage, { recursive: true, force: true });
await mkdir(stage, { recursive: true });
const at = (...p) => join(stage, ...p);

async function put(path, content, mode = 0o644) {
  await mkdir(dirname(at(path)), { recursive: true });
  await writeFile(at(path), content);
  await chmod(at(path), mode);
}
async function link(path, target) {
  await mkdir(dirname(at(path)), { recursive: true });
  await symlink(target, at(path));
}
const debianFile = (name) => readFile(join(DEBIAN, name), 'utf8');
const gzip = (text) => gzipSync(Buffer.from(text), { level: 9 }); // Node writes no name and mtime 0, like gzip -n

// The tool and its data.
const LIB = 'usr/lib/mkinitrd-pkg';
execFileSync(process.execPath, [join(ROOT, 'scripts/package/bundle.mjs'), at(LIB)], { stdio: ['ignore', 'ignore', 'inherit'] });
const thirdParty = JSON.parse(await readFile(at(LIB, 'THIRD-PARTY.json'), 'utf8'));
await rm(at(LIB, 'THIRD-PARTY.json'));
const readme = await readFile(at(LIB, 'README.md'), 'utf8');
await rm(at(LIB, 'README.md'));
await put(`${LIB}/kernel-hook`, await debianFile('kernel-hook'), 0o755);
await link('usr/bin/mkinitrd-pkg', '../lib/mkinitrd-pkg/bin/run.js');

// The kernel-install plugin, run by kernel-install from its own directory. It runs this
// package's CLI and caches where the other hooks do; the unmodified copy stays in
// /usr/lib/mkinitrd-pkg/kernel-install/ for `mkinitrd-pkg install-plugin`.
let plugin = await readFile(join(ROOT, 'scripts/kernel-install/50-mkinitrd-pkg.install'), 'utf8');
for (const [name, value] of [
  ['MKINITRD_PKG_DEFAULT', '/usr/bin/mkinitrd-pkg'],
  ['MKINITRD_PKG_DEFAULT_CACHE_DIR', '/var/cache/mkinitrd-pkg'],
]) {
  const line = new RegExp(`^${name}=.*$`, 'm');
  if (!line.test(plugin)) throw new Error(`the plugin has no ${name}= line`);
  plugin = plugin.replace(line, `${name}=${value}`);
}
await put('usr/lib/kernel/install.d/50-mkinitrd-pkg.install', plugin, 0o755);

// Debian's kernel hooks (run-parts names: no dots) and the configuration.
await put('etc/kernel/postinst.d/mkinitrd-pkg', await debianFile('kernel-postinst.d'), 0o755);
await put('etc/kernel/postrm.d/mkinitrd-pkg', await debianFile('kernel-postrm.d'), 0o755);
await put('etc/mkinitrd-pkg/mkinitrd-pkg.conf', await debianFile('mkinitrd-pkg.conf'));
// systemd's Debian-only 55-initrd.install (85-initrd.install before trixie) links
// /boot/initrd.img-KVER into every boot entry as a further initrd; our plugin already
// builds the entry's initrd, so both names are masked (kernel-install(8): a /dev/null
// symlink in /etc/kernel/install.d) for as long as this package is installed.
await link('etc/kernel/install.d/55-initrd.install', '/dev/null');
await link('etc/kernel/install.d/85-initrd.install', '/dev/null');
await mkdir(at('var/lib/mkinitrd-pkg'), { recursive: true });

// presets/initrd-tree/ is data the builder copies into every initrd image (the unit that
// activates merged extensions, its sysinit.target.wants link, a udev rule): paths of an
// image, not of this system, so lintian's checks of this system's units do not apply.
await put(
  'usr/share/lintian/overrides/mkinitrd-pkg',
  [
    '# Files of initrd images (presets/initrd-tree/), copied into each image, not units of this system.',
    'mkinitrd-pkg: service-file-is-not-a-file [usr/lib/mkinitrd-pkg/presets/initrd-tree/usr/lib/systemd/system/sysinit.target.wants/mkinitrd-pkg-sysext-activate.service]',
    'mkinitrd-pkg: repeated-path-segment lib [usr/lib/mkinitrd-pkg/presets/initrd-tree/usr/lib/]',
    'mkinitrd-pkg: repeated-path-segment usr [usr/lib/mkinitrd-pkg/presets/initrd-tree/usr/]',
    'mkinitrd-pkg: repeated-path-segment mkinitrd-pkg [usr/lib/mkinitrd-pkg/presets/initrd-tree/usr/lib/mkinitrd-pkg/]',
    '',
  ].join('\n'),
);

// Documentation.
const DOC = 'usr/share/doc/mkinitrd-pkg';
const date = new Date(epoch * 1000).toUTCString().replace(/GMT$/, '+0000').replace(/^(\w+), 0?(\d+)/, '$1, $2');
await put(
  `${DOC}/changelog.gz`,
  gzip(`mkinitrd-pkg (${version}) unstable; urgency=medium\n\n  * Package built from the mkinitrd-pkg repository (npm run package:deb).\n\n -- mkinitrd-pkg developers <mkinitrd-pkg@example.org>  ${date}\n`),
);
const bundledList = [...new Map(Object.values(thirdParty).flat().map((p) => [`${p.name}@${p.version}`, p])).values()]
  .sort((a, b) => a.name.localeCompare(b.name))
  .map((p) => ` ${p.name} ${p.version} (${typeof p.license === 'string' ? p.license : JSON.stringify(p.license)})`)
  .join('\n');
await put(`${DOC}/copyright`, (await debianFile('copyright.in')).replace('@THIRD_PARTY@', bundledList).replace('@YEAR@', String(new Date(epoch * 1000).getUTCFullYear())));
await put(`${DOC}/README.md.gz`, gzip(readme));
await put(`${DOC}/THIRD-PARTY.json.gz`, gzip(JSON.stringify(thirdParty, null, 2) + '\n'));
await put('usr/share/man/man8/mkinitrd-pkg.8.gz', gzip((await debianFile('mkinitrd-pkg.8')).replaceAll('@VERSION@', version)));

// Modes: directories 0755, files 0644 unless set executable above (umask-independent).
const files = [];
let installedKiB = 0;
async function normalise(dir) {
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const path = join(dir, entry.name);
    const st = await lstat(path);
    if (entry.isDirectory()) {
      await chmod(path, 0o755);
      installedKiB += 1;
      await normalise(path);
    } else if (entry.isFile()) {
      await chmod(path, st.mode & 0o111 ? 0o755 : 0o644);
      installedKiB += Math.ceil(st.size / 1024);
      files.push(relative(stage, path));
    } else {
      installedKiB += 1;
    }
  }
}
await normalise(stage);

// DEBIAN/: control, conffiles (every regular file under /etc), md5sums, scripts.
const conffiles = files.filter((f) => f.startsWith('etc/')).map((f) => `/${f}\n`).join('');
const md5sums = [];
for (const f of files) md5sums.push(`${createHash('md5').update(await readFile(at(f))).digest('hex')}  ${f}\n`);
await put(
  'DEBIAN/control',
  (await debianFile('control.in')).replace('@VERSION@', version).replace('@INSTALLED_SIZE@', String(installedKiB)),
);
await put('DEBIAN/conffiles', conffiles);
await put('DEBIAN/md5sums', md5sums.join(''));
await put('DEBIAN/postinst', await debianFile('postinst'), 0o755);
await put('DEBIAN/postrm', await debianFile('postrm'), 0o755);
await chmod(at('DEBIAN'), 0o755);

// Every mtime = SOURCE_DATE_EPOCH (children before their directory).
async function stamp(path) {
  const st = await lstat(path);
  if (st.isDirectory()) for (const name of await readdir(path)) await stamp(join(path, name));
  if (st.isSymbolicLink()) await lutimes(path, epoch, epoch);
  else await utimes(path, epoch, epoch);
}
await stamp(stage);

const deb = join(out, `mkinitrd-pkg_${version}_all.deb`);
const temp = `${deb}.tmp`;
execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, temp], {
  env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) },
  stdio: ['ignore', 'ignore', 'inherit'],
});
await rename(temp, deb);
await rm(stage, { recursive: true, force: true });
const size = (await lstat(deb)).size;
process.stdout.write(`${deb}: ${size} bytes, ${files.length} files, Installed-Size ${installedKiB} KiB, SOURCE_DATE_EPOCH ${epoch}\n`);
