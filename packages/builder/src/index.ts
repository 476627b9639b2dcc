export { buildInitrd, outputPathFor, sha256File } from './build.js';
export type { BuildOptions, BuildResult, ImageResult, PhaseTiming } from './build.js';
export { makeInitrdRoot } from './initrd.js';
export { sizeByDirectory } from './tree.js';
export { cleanCache, treeDigest, ROOT_CACHE_FORMAT } from './cache.js';
export type { CleanResult, RootCacheMeta } from './cache.js';
export { prepareTools } from './tools.js';
export type { PreparedTools, ToolsManifest } from './tools.js';
