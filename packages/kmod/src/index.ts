export { installKernelModules, findKernelVersions, MODULE_COMPRESSIONS } from './install.js';
export type { ModuleSelection, InstallModulesOptions, InstallModulesResult, ModuleCompression } from './install.js';
export { compileModulePatterns } from './select.js';
export type { ModulePattern } from './select.js';
export { normalizeModuleName } from './moddb.js';
export { readHostModules, HOST_PATTERN, HOST_MODULES_ENV } from './host.js';
export type { HostModuleSources, HostModules } from './host.js';
export { runDepmod } from './depmod.js';
