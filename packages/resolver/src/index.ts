export { AptResolver, parseDpkgStatus, explainAptFailure, debianArchitecture, isForeignArchitecture } from './apt.js';
export {
  DnfResolver,
  explainDnfFailure,
  parseScriptletFailures,
  parseRpmQuery,
  parseDnfTransaction,
  dnfRepositories,
  renderDnfConf,
  rpmArchitecture,
  RPMDB_PATH,
} from './dnf.js';
export type { DnfRepository, ScriptletFailure, RpmRecord, PlannedRpm } from './dnf.js';
export { runInMountNamespace, systemMounts } from './namespace.js';
export type { NamespaceMount } from './namespace.js';
export { createResolver, RESOLVER_FACTORIES } from './registry.js';
export type { InstallRequest, InstallResult, InstalledPackage, Resolver, UnpackRequest, UnpackResult } from './types.js';
export { toolsTreeConfig, unpackToolsRoot, checkToolsRoot } from './tools.js';
