export { ERROR_CODES, UserError, isUserError, isErrnoException, exitStatusOf, environmentErrno, asEnvironmentError, OUTPUT_ERRNOS, MACHINE_ERRNOS } from './errors.js';
export type { ErrorCode, UserErrorOptions } from './errors.js';
export { createLogger, getLogger, setLogger, silentLogger } from './logger.js';
export type { Logger, LoggerOptions } from './logger.js';
export { run, shellQuote, formatCommand, lastLines, hasCommand, requireCommands, childEnvironment } from './run.js';
export {
  resolveTool,
  resolveToolSync,
  withToolsRoot,
  currentToolsRoot,
  findSystemTool,
  elfInterpreter,
  realpathInRoot,
  toolsRootInvocation,
  checkToolLibraries,
  packageForTool,
  SYSTEM_TOOL_DIRS,
  SYSTEM_PATH,
  HOST_TOOLS,
  TOOL_PACKAGES,
} from './tools.js';
export type { ToolsRoot, ResolvedTool } from './tools.js';
export type { RunOptions, RunResult } from './run.js';
export {
  safeComponents,
  resolveInsideRoot,
  isPathInside,
  createAtomicOutput,
  withAtomicOutput,
  copyFileAtomically,
  pathExists,
  checkOutputPath,
  removeStaleOutputTemporaries,
} from './fs.js';
export type { AtomicOutput } from './fs.js';
export { createProgress, formatBytes } from './progress.js';
export type { Progress } from './progress.js';
export { hasGlob, globToRegExp, globToRegExpSource } from './glob.js';
export { createWorkDir, removeWorkDir, lockCache, cacheLockPath, ownerOfName, isTaggedCache } from './workdir.js';
export { CACHE_DIRS, CACHE_LOCK_FILE, CACHEDIR_TAG, cachePath, packageManagerCachePath, cleanableCacheDirs } from './cache-layout.js';
export type { CacheDirName } from './cache-layout.js';
export { ownerToken, isOwnerAlive, lockFile, processStartTime, exitedOwnerToken, OWNER_TOKEN_SOURCE } from './owner.js';
export type { FileLock } from './owner.js';
export { registerCleanup, unregisterCleanup, runCleanupsSync } from './cleanup.js';
export { defaultCacheDir, requireRoot, sourceDateEpochFromEnv } from './environment.js';
export { ADMIN_DATA_DIR, VENDOR_DATA_DIR, builtinDataDir, builtinDataPath, dataSearchPath, findDataFile, findDataRoot } from './data.js';
export type { DataKind } from './data.js';
export { PACKAGE_MANAGERS, PACKAGE_MANAGER_NAMES, isPackageManagerName, packageManagerEntry, allPackageManagerPaths } from './package-managers.js';
export type { PackageManagerEntry, PackageManagerName } from './package-managers.js';
export { ARCHITECTURES, ARCHITECTURE_NAMES, isArchitectureName, architectureEntry, hostArchitecture } from './architectures.js';
export type { ArchitectureEntry, ArchitectureName, PartitionTypes } from './architectures.js';
