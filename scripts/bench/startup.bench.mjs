// Benchmark: start-up of the CLI (`mkinitrd-pkg --version`) as the checkout runs it
// (packages/*/dist, node_modules resolved module by module) and as the Debian and npm
// packages run it (scripts/package/bundle.mjs: one bundled module), against `node -e 0`
// (Node's own start-up, the floor). Whole processes, interleaved, median of RUNS runs;
// CPU time (user + sys of the child) is quoted besides wall time because this machine is
// shared and wall time is noisy.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'packages/cli/bin/run.js');
const RUNS = Number(process.env.MKINITRD_PKG_BENCH_RUNS ?? 11);

if (!existsSync(join(ROOT, 'packages/cli/dist/main.js'))) {
  console.log('startup bench: run `npx tsc -b` first');
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), 'mkinitrd-pkg-startup-'));
try {
  const bundle = join(dir, 'mkinitrd-pkg');
  spawnSync(process.execPath, [join(ROOT, 'scripts/package/bundle.mjs'), bundle], { stdio: 'ignore' });
  const variants = {
    'node -e 0': [process.execPath, '-e', '0'],
    checkout: [process.execPath, CLI, '--version'],
    bundle: [process.execPath, join(bundle, 'bin/run.js'), '--version'],
  };
  const samples = Object.fromEntries(Object.keys(variants).map((k) => [k, { wall: [], cpu: [] }]));
  for (let i = 0; i < RUNS + 1; i++) {
    for (const [name, [cmd, ...args]] of Object.entries(variants)) {
      const start = process.hrtime.bigint();
      const r = spawnSync('/usr/bin/time', ['-f', '%U %S', cmd, ...args], { encoding: 'utf8', cwd: dir });
      const wall = Number(process.hrtime.bigint() - start) / 1e9;
      if (r.status !== 0) throw new Error(`${name}: exit ${r.status}: ${r.stderr}`);
      const [user, sys] = r.stderr.trim().split('\n').at(-1).split(' ').map(Number);
      if (i === 0) continue; // warm-up
      samples[name].wall.push(wall);
      samples[name].cpu.push(user + sys);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  console.log(`start-up, median of ${RUNS} (seconds)`);
  console.log('| | wall | cpu (user+sys) |');
  console.log('| --- | --- | --- |');
  for (const [name, s] of Object.entries(samples)) console.log(`| ${name} | ${median(s.wall).toFixed(3)} | ${median(s.cpu).toFixed(3)} |`);
  const ratio = median(samples.bundle.cpu) / median(samples.checkout.cpu);
  console.log(`bundle/checkout cpu: ${ratio.toFixed(2)}×`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
