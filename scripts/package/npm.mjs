#!/usr/bin/env node
// The npm package: the bundle (scripts/package/bundle.mjs) packed with `npm pack`.
//
//   node scripts/package/npm.mjs [OUT_DIR]    (default: dist/npm) → OUT_DIR/mkinitrd-pkg-VERSION.tgz
//
// Install it with `npm install -g ./mkinitrd-pkg-VERSION.tgz`: the tarball carries the
// presets, sysext definitions and kernel-install plugin, and pino-pretty as a bundled
// dependency; only the optional native zstd binding is fetched.
import { execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const out = resolve(process.argv[2] ?? join(ROOT, 'dist/npm'));
const bundle = join(out, 'bundle', 'mkinitrd-pkg');

execFileSync(process.execPath, [join(ROOT, 'scripts/package/bundle.mjs'), bundle], { stdio: 'inherit' });
await mkdir(out, { recursive: true });
const report = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', out], { cwd: bundle, encoding: 'utf8' }));
process.stdout.write(`${join(out, report[0].filename)}: ${report[0].size} bytes, ${report[0].entryCount} files\n`);
