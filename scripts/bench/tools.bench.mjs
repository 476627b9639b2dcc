// Benchmark: what the tools root (build tools from packages, ToolsTree=default) costs per
// release. Cold: no tools root yet, its packages already downloaded (the cost every new
// cache pays once per package set; downloads are the mirror's business). Warm: found
// by the index and verified by its tree digest (every build pays this). Also: the same
// cached build with ToolsTree=host, and the tools root's size on disk.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../packages/cli/bin/run.js', import.meta.url));
const shared = process.env.MKINITRD_PKG_BENCH_CACHE ?? '/var/tmp/mkinitrd-pkg-bench-cache';
const dir = mkdtempSync(join(tmpdir(), 'mkinitrd-pkg-tools-bench-'));
// A cache of our own (never removing what a concurrent build may be using), with the shared
// cache's downloads: the first build's tools phase is then the cold unpack + check + digest.
const cache = join(dir, 'cache');
execFileSync('mkdir', ['-p', cache]);
if (existsSync(join(shared, 'apt'))) execFileSync('cp', ['-a', join(shared, 'apt'), join(cache, 'apt')]);

function build(preset, extra = []) {
  const start = performance.now();
  const r = spawnSync('node', [CLI, 'build', '--preset', preset, '--output', join(dir, `${preset}.img`), '--cache-dir', cache, '--json', ...extra], {
    encoding: 'utf8',
    env: { ...process.env, MKINITRD_PKG_LOG_LEVEL: 'warn' },
  });
  const seconds = (performance.now() - start) / 1000;
  if (r.status !== 0) throw new Error(`build --preset ${preset} failed: ${r.stderr}`);
  const result = JSON.parse(r.stdout);
  return { seconds, tools: result.phases.find((p) => p.phase === 'tools')?.seconds ?? 0, result };
}

console.log('tools bench          cold tools   warm tools   warm build   host-tools build   tools root');
for (const preset of ['debian', 'debian-12']) {
  const cold = build(preset); // fills the installroot and tools caches
  const warm = [build(preset), build(preset)].sort((a, b) => a.seconds - b.seconds)[0];
  const host = [build(preset, ['--tools-tree', 'host']), build(preset, ['--tools-tree', 'host'])].sort((a, b) => a.seconds - b.seconds)[0];
  const roots = execFileSync('sh', ['-c', `du -sb ${join(cache, 'tools')}/*/root | sort -n | tail -1`], { encoding: 'utf8' }).trim().split('\t')[0];
  rmSync(join(cache, 'tools'), { recursive: true, force: true }); // the next release starts cold too
  console.log(
    `${preset.padEnd(20)} ${cold.tools.toFixed(1).padStart(8)} s ${warm.tools.toFixed(2).padStart(10)} s ${warm.seconds.toFixed(1).padStart(10)} s ${host.seconds.toFixed(1).padStart(16)} s ` +
      `${(Number(roots) / 1e6).toFixed(1).padStart(8)} MB, ${cold.result.tools.packages.length} packages`,
  );
}
rmSync(dir, { recursive: true, force: true });
