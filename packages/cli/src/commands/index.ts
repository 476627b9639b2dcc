import Build from './build.js';
import CacheClean from './cache-clean.js';
import Extract from './extract.js';
import Inspect from './inspect.js';
import Pack from './pack.js';
import Presets from './presets.js';
import Summary from './summary.js';
import SysextBuild from './sysext-build.js';
import SysextPack from './sysext-pack.js';

/** oclif "explicit" command discovery: no directory scan at start-up. */
export const COMMANDS = {
  build: Build,
  'cache:clean': CacheClean,
  pack: Pack,
  inspect: Inspect,
  extract: Extract,
  summary: Summary,
  presets: Presets,
  'sysext:build': SysextBuild,
  'sysext:pack': SysextPack,
  'install-plugin': (await import('./install-plugin.js')).default,
};
