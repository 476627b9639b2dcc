// Benchmark: `mkinitrd-pkg pack` against GNU cpio and bsdtar (uncompressed) and against
// `cpio | zstd -3 -T0` (zstd), on trees of real files copied from /usr/lib (~100 MB and
// ~700 MB). Whole processes, warm page cache, median of RUNS runs, tools interleaved;
// each run writes a fresh file (the old output is removed and `sync`ed outside the timing).
// Prints ratios ours/peer (target: ≤ 1× the faster of cpio/bsdtar), our peak RSS
// (target ≤ 256 MB) and whether our outputs are byte-identical across runs.
//
// Note: ours writes through createAtomicOutput, which fsyncs before the rename; the peers
// do not. The "bsdtar+fsync" line shows what that durability costs a peer.
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));
const BASE = process.env.MKINITRD_PKG_BENCH_DIR ?? '/var/tmp/mkinitrd-pkg-bench';
const RUNS = Number(process.env.MKINITRD_PKG_BENCH_RUNS ?? 3);
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

if (!has('cpio') || !has('bsdtar') || !has('zstd')) {
  console.log('pack bench: needs cpio, bsdtar and zstd (apt-get install cpio libarchive-tools zstd); skipped');
  process.exit(0);
}
if (!existsSync(CLI.replace(/bin\/run\.js$/, 'dist/main.js'))) {
  console.log('pack bench: run `npx tsc -b` first');
  process.exit(1);
}

/** Directories of /usr/lib, largest first, that together make about `target` bytes. */
function selection(target) {
  const dirs = readdirSync('/usr/lib', { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => {
      const r = spawnSync('du', ['-sb', join('/usr/lib', d.name)], { encoding: 'utf8' });
      return { name: d.name, size: Number(r.stdout.split('\t')[0]) || 0 };
    })
    .sort((a, b) => b.size - a.size || (a.name < b.name ? -1 : 1));
  const chosen = [];
  let total = 0;
  for (const d of dirs) {
    if (total >= target * 0.9) break;
    if (total + d.size <= target * 1.1) {
      chosen.push(d.name);
      total += d.size;
    }
  }
  return { names: chosen.sort(), total };
}

function makeTree(label, target) {
  const dir = join(BASE, `tree-${label}`);
  const { names, total } = selection(target);
  const stamp = join(BASE, `tree-${label}.stamp`);
  const want = names.join(' ');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== want || !existsSync(dir)) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    execFileSync('cp', ['-a', ...names.map((n) => join('/usr/lib', n)), dir]);
    writeFileSync(stamp, want);
  }
  const files = Number(execFileSync('sh', ['-c', `find "${dir}" | wc -l`], { encoding: 'utf8' }).trim());
  return { label, dir, names, bytes: total, files };
}

/** Run a whole process; returns { seconds, rssKB }. */
function timed(file, args, cwd) {
  const rssFile = join(BASE, 'rss.txt');
  const [cmd, argv] = TIME ? [TIME, ['-f', '%M', '-o', rssFile, file, ...args]] : [file, args];
  const start = performance.now();
  const r = spawnSync(cmd, argv, { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'warn' } });
  const seconds = (performance.now() - start) / 1000;
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
  const rssKB = TIME ? Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) : NaN;
  return { seconds, rssKB };
}

async function sha256(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest('hex');
}

// The CLI as the Debian and npm packages ship it: one esbuild module (scripts/package/bundle.mjs),
// so start-up does not resolve and compile node_modules module by module.
const BUNDLE_DIR = join(BASE, 'bundle');
spawnSync(process.execPath, [fileURLToPath(new URL('../package/bundle.mjs', import.meta.url)), BUNDLE_DIR], { stdio: 'ignore' });
const BUNDLE = existsSync(join(BUNDLE_DIR, 'bin/run.js')) ? join(BUNDLE_DIR, 'bin/run.js') : undefined;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sh = (script) => ['sh', ['-c', script]];

async function benchTree(tree) {
  const out = (name) => join(BASE, `out-${tree.label}-${name}`);
  const tools = {
    ours: ['node', [CLI, 'pack', tree.dir, '--output', out('ours'), '--compression', 'none']],
    ...(BUNDLE && { 'ours bundle': ['node', [BUNDLE, 'pack', tree.dir, '--output', out('ours bundle'), '--compression', 'none']] }),
    cpio: sh(`find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc --quiet > "${out('cpio')}"`),
    bsdtar: ['bsdtar', ['--format', 'newc', '-cf', out('bsdtar'), '.']],
    'bsdtar+fsync': sh(`bsdtar --format newc -cf "${out('bsdtar+fsync')}" . && sync "${out('bsdtar+fsync')}"`),
    'ours zstd': ['node', [CLI, 'pack', tree.dir, '--output', out('ours zstd')]],
    'cpio|zstd': sh(`find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc --quiet | zstd -3 -T0 -q > "${out('cpio|zstd')}"`),
    'bsdtar|zstd': sh(`bsdtar --format newc -cf - . | zstd -3 -T0 -q > "${out('bsdtar|zstd')}"`),
  };
  const results = Object.fromEntries(Object.keys(tools).map((k) => [k, { seconds: [], rss: [], sha: new Set(), size: 0 }]));
  for (let run = 0; run <= RUNS; run++) {
    for (const [name, [file, args]] of Object.entries(tools)) {
      rmSync(out(name), { force: true });
      spawnSync('sync');
      const t = timed(file, args, tree.dir);
      if (run === 0) continue; // warm-up: page cache
      results[name].seconds.push(t.seconds);
      results[name].rss.push(t.rssKB);
      results[name].size = statSync(out(name)).size;
      if (name.startsWith('ours')) results[name].sha.add(await sha256(out(name)));
    }
  }
  // Fixed cost of the CLI (node + oclif + common), from packing an empty directory.
  const empty = join(BASE, 'empty');
  mkdirSync(empty, { recursive: true });
  const startup = median(Array.from({ length: RUNS }, () => timed('node', [CLI, 'pack', empty, '-o', join(BASE, 'out-empty'), '--compression', 'none']).seconds));
  for (const name of Object.keys(tools)) rmSync(out(name), { force: true });
  for (const leftover of [empty, join(BASE, 'out-empty'), join(BASE, 'rss.txt')]) rmSync(leftover, { recursive: true, force: true });
  return { results, startup };
}

const trees = [makeTree('100mb', 100e6), makeTree('700mb', 700e6)];
const s = (x) => `${x.toFixed(3)} s`;
const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;
let worst = 0;
let worstBundle = 0;
let maxRss = 0;
let reproducible = true;
for (const tree of trees) {
  const { results, startup } = await benchTree(tree);
  const t = (name) => median(results[name].seconds);
  console.log(`\npack bench: ${tree.label} tree (${mb(tree.bytes)}, ${tree.files} entries: ${tree.names.join(', ')}), median of ${RUNS}`);
  for (const name of Object.keys(results)) {
    const r = results[name];
    const extra = name.startsWith('ours')
      ? `  peak RSS ${(median(r.rss) / 1024).toFixed(0)} MB (max ${(Math.max(...r.rss) / 1024).toFixed(0)})  reproducible: ${r.sha.size === 1 ? 'yes' : 'NO'}`
      : '';
    console.log(`  ${name.padEnd(13)} ${s(t(name))}  ${mb(r.size).padStart(9)}${extra}`);
    if (name.startsWith('ours')) {
      maxRss = Math.max(maxRss, ...r.rss);
      reproducible &&= r.sha.size === 1;
    }
  }
  const fastest = Math.min(t('cpio'), t('bsdtar'));
  const ratio = t('ours') / fastest;
  worst = Math.max(worst, ratio);
  console.log(`  ratios: ours/cpio ${(t('ours') / t('cpio')).toFixed(2)}×, ours/bsdtar ${(t('ours') / t('bsdtar')).toFixed(2)}×, ours/(bsdtar+fsync) ${(t('ours') / t('bsdtar+fsync')).toFixed(2)}×, ours zstd/(cpio|zstd) ${(t('ours zstd') / t('cpio|zstd')).toFixed(2)}×, ours zstd/(bsdtar|zstd) ${(t('ours zstd') / t('bsdtar|zstd')).toFixed(2)}×`);
  if (BUNDLE) {
    const bundleRatio = t('ours bundle') / t('bsdtar');
    worstBundle = Math.max(worstBundle, bundleRatio);
    console.log(`  as shipped (bundle): ours bundle/bsdtar ${bundleRatio.toFixed(2)}×, ours bundle/(bsdtar+fsync) ${(t('ours bundle') / t('bsdtar+fsync')).toFixed(2)}× (target ≤ 1.0× bsdtar)`);
  }
  console.log(`  CLI start-up (pack of an empty dir): ${s(startup)}; ours none without it: ${s(t('ours') - startup)} → ${((t('ours') - startup) / fastest).toFixed(2)}× the faster peer`);
}
console.log(`\npack bench summary: worst ours/faster-peer (none) ${worst.toFixed(2)}× (target ≤ 1.00×)${BUNDLE ? `, as shipped (bundle) worst ours/bsdtar ${worstBundle.toFixed(2)}×` : ''}, peak RSS ${(maxRss / 1024).toFixed(0)} MB (target ≤ 256), reproducible ${reproducible ? 'yes' : 'NO'}`);
