export { buildInitrd, defaultCacheDir, outputPathFor, sha256File } from './build.js';
export type { BuildOptions, BuildResult, ImageResult, PhaseTiming } from './build.js';
export { makeInitrdRoot } from './initrd.js';
export { sizeByDirectory } from './tree.js';
