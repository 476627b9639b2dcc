export { parseIniAssignments, shown } from './ini-lines.js';
export type { Assignment } from './ini-lines.js';
export { SCHEMA, schemaKeys, flagKeys, flagAssignments, COMPRESSIONS, OUTPUT_FORMATS, EMERGENCY_SHELLS, MODULE_COMPRESSIONS, EXTENSION_IMAGE_POLICIES, isPasswordHash, applyAssignments, emptyConfig, parseBoolean, lookupKey, invalidValue, PACKAGE_NAME_RE } from './schema.js';
export type { ImageConfig, Compression, PackageManager, OutputFormat, EmergencyShell, ModuleCompression, ExtensionImagePolicy, KeySpec, FlagSpec, FlagValue } from './schema.js';
export {
  loadConfig,
  listPresets,
  listConfFiles,
  findPreset,
  readConfigText,
  PRESET_NAME_RE,
  renderConfig,
  BUILTIN_PRESET_DIR,
  DEFAULT_DROPIN_DIRS,
  DEFAULT_PRESET_DIRS,
} from './load.js';
export { repositoryIdentity } from './repository-identity.js';
export type { RepositoryFields } from './repository-identity.js';
export type { LoadConfigOptions, ConfigOverrides, PresetInfo } from './load.js';
