export { installKernelModules, findKernelVersions } from './install.js';
export type { ModuleSelection, InstallModulesOptions, InstallModulesResult } from './install.js';
export { compileModulePatterns } from './select.js';
export type { ModulePattern } from './select.js';
export { normalizeModuleName } from './moddb.js';
