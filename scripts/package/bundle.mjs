#!/usr/bin/env node
// Bundles the CLI and its data into one directory that runs without npm or a checkout:
// the payload of the Debian package (/usr/lib/mkinitrd-pkg) and of the npm package.
//
//   node scripts/package/bundle.mjs [OUT_DIR]      (default: dist/bundle/mkinitrd-pkg)
//
// OUT_DIR/
//   package.json        name mkinitrd-pkg; oclif reads its commands from dist/ (explicit strategy)
//   bin/run.js          the executable
//   dist/mkinitrd-pkg.mjs  every workspace package and npm dependency in one ES module
//   dist/install-worker.js  sysext's install worker (its own process), bundled likewise
//   node_modules/pino-pretty/  bundled on its own: loaded with require() only on a TTY
//   presets/ sysext/ kernel-install/   the data (common/src/data.ts finds it beside dist/)
//   THIRD-PARTY.json    the npm packages inside the bundle, with versions and licenses
//
// The native zstd binding is not bundled: the npm package lists it as an optional
// dependency, the Debian package (Architecture: all) goes without it and runs the zstd
// program (packer/src/compress.ts). Same inputs → same bytes (esbuild is deterministic;
// files are written in a fixed order; no timestamps inside).
import { build } from 'esbuild';
import { cp, mkdir, readFile, rm, writeFile, chmod, readdir } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const out = resolve(process.argv[2] ?? join(ROOT, 'dist/bundle/mkinitrd-pkg'));

const readJson = async (path) => JSON.parse(await readFile(path, 'utf8'));
const cliPkg = await readJson(join(ROOT, 'packages/cli/package.json'));
const rootPkg = await readJson(join(ROOT, 'package.json'));
const prettyPkg = await readJson(join(ROOT, 'node_modules/pino-pretty/package.json'));
const zstdPkg = await readJson(join(ROOT, 'node_modules/@mongodb-js/zstd/package.json'));

await rm(out, { recursive: true, force: true });
await mkdir(join(out, 'dist'), { recursive: true });

// ESM output needs a real require() for the CommonJS dependencies esbuild wraps (pino,
// oclif's own lazy requires of node: modules).
const banner = "import { createRequire as __mkinitrdPkgCreateRequire } from 'node:module';\nconst require = __mkinitrdPkgCreateRequire(import.meta.url);";

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  legalComments: 'none',
  logLevel: 'warning',
  metafile: true,
  absWorkingDir: ROOT,
};

/** An ES module of ours, every dependency inside but those resolved at run time from OUT_DIR/node_modules. */
const esm = (source, outfile) =>
  build({
    ...common,
    ...source,
    format: 'esm',
    outfile: join(out, outfile),
    banner: { js: banner },
    external: ['pino-pretty', '@mongodb-js/zstd', '@mongodb-js/zstd/*'],
  });

// The entry: what bin/run.js calls (main) and what oclif imports for its command table.
const main = await esm(
  {
    stdin: {
      contents: "export { main } from './packages/cli/dist/main.js';\nexport { COMMANDS } from './packages/cli/dist/commands/index.js';\n",
      resolveDir: ROOT,
      sourcefile: 'mkinitrd-pkg-entry.js',
      loader: 'js',
    },
  },
  'dist/mkinitrd-pkg.mjs',
);

// sysext's package-install worker runs as its own process (packages/sysext/src/layer.ts
// starts `node install-worker.js` beside the module that imports it): bundled on its own,
// next to the main module.
const worker = await esm({ entryPoints: [join(ROOT, 'packages/sysext/dist/install-worker.js')] }, 'dist/install-worker.js');

const pretty = await build({
  ...common,
  entryPoints: [join(ROOT, 'node_modules/pino-pretty', prettyPkg.main ?? 'index.js')],
  format: 'cjs',
  outfile: join(out, 'node_modules/pino-pretty/index.js'),
});
await writeFile(
  join(out, 'node_modules/pino-pretty/package.json'),
  JSON.stringify({ name: 'pino-pretty', version: prettyPkg.version, license: prettyPkg.license, main: 'index.js', description: 'pino-pretty bundled with its dependencies for mkinitrd-pkg' }, null, 2) + '\n',
);

/** npm packages whose files ended up in a bundle: name, version, license. */
async function thirdParty(metafile) {
  const found = new Map();
  for (const input of Object.keys(metafile.inputs)) {
    const m = /(?:^|\/)node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (!m) continue;
    const dir = input.slice(0, m.index + m[0].length);
    if (found.has(dir)) continue;
    const pkg = await readJson(join(ROOT, dir, 'package.json'));
    found.set(dir, { name: pkg.name, version: pkg.version, license: pkg.license ?? pkg.licenses ?? 'UNKNOWN' });
  }
  return [...new Map([...found.values()].map((p) => [`${p.name}@${p.version}`, p])).values()].sort((a, b) =>
    `${a.name}@${a.version}`.localeCompare(`${b.name}@${b.version}`),
  );
}
const bundled = await thirdParty(main.metafile);
const bundledWorker = await thirdParty(worker.metafile);
const bundledPretty = await thirdParty(pretty.metafile);
await writeFile(
  join(out, 'THIRD-PARTY.json'),
  JSON.stringify({ 'dist/mkinitrd-pkg.mjs': bundled, 'dist/install-worker.js': bundledWorker, 'node_modules/pino-pretty/index.js': bundledPretty }, null, 2) + '\n',
);

await mkdir(join(out, 'bin'));
await writeFile(
  join(out, 'bin/run.js'),
  "#!/usr/bin/env node\nimport { main } from '../dist/mkinitrd-pkg.mjs';\n\nprocess.exitCode = await main(process.argv.slice(2), import.meta.url);\n",
);
await chmod(join(out, 'bin/run.js'), 0o755);

// Data: the same directories a checkout has, the plugin in kernel-install/.
for (const dir of ['presets', 'sysext']) {
  await cp(join(ROOT, dir), join(out, dir), { recursive: true });
}
await mkdir(join(out, 'kernel-install'));
await cp(join(ROOT, 'scripts/kernel-install/50-mkinitrd-pkg.install'), join(out, 'kernel-install/50-mkinitrd-pkg.install'));
await chmod(join(out, 'kernel-install/50-mkinitrd-pkg.install'), 0o755);
await cp(join(ROOT, 'README.md'), join(out, 'README.md'));

const pkg = {
  name: 'mkinitrd-pkg',
  version: cliPkg.version,
  description: rootPkg.description,
  license: rootPkg.license,
  type: 'module',
  engines: rootPkg.engines,
  os: ['linux'],
  bin: { 'mkinitrd-pkg': './bin/run.js' },
  files: ['bin', 'dist', 'presets', 'sysext', 'kernel-install', 'THIRD-PARTY.json'],
  oclif: { ...cliPkg.oclif, commands: { ...cliPkg.oclif.commands, target: './dist/mkinitrd-pkg.mjs' } },
  // Bundled (shipped inside the tarball, not fetched): pino-pretty, already one file.
  dependencies: { 'pino-pretty': prettyPkg.version },
  bundleDependencies: ['pino-pretty'],
  // In-process zstd when the platform has a prebuilt binding; else the zstd program.
  optionalDependencies: { '@mongodb-js/zstd': zstdPkg.version },
};
await writeFile(join(out, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');

const files = [];
async function walk(dir) {
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await walk(path);
    else files.push(relative(out, path));
  }
}
await walk(out);
process.stdout.write(`${out}: ${files.length} files, ${bundled.length + bundledPretty.length} npm packages bundled\n`);
