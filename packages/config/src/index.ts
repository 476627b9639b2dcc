export { parseIniAssignments } from './ini-lines.js';
export type { Assignment } from './ini-lines.js';
export { SCHEMA, COMPRESSIONS, OUTPUT_FORMATS, EMERGENCY_SHELLS, isPasswordHash, applyAssignments, emptyConfig, parseBoolean, lookupKey } from './schema.js';
export type { ImageConfig, Compression, PackageManager, OutputFormat, EmergencyShell } from './schema.js';
export {
  loadConfig,
  listPresets,
  listConfFiles,
  findPreset,
  renderConfig,
  BUILTIN_PRESET_DIR,
  DEFAULT_DROPIN_DIRS,
  DEFAULT_PRESET_DIRS,
} from './load.js';
export type { LoadConfigOptions, ConfigOverrides, PresetInfo } from './load.js';
