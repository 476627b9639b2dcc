import { run, type Logger } from '@mkinitrd-pkg/common';
import pLimit from 'p-limit';
import { moduleNameFromPath, parseSoftdepTokens, type ModuleSoftdeps } from './moddb.js';

export interface ModuleInfo {
  /** Host path modinfo was given. */
  filename: string;
  firmware: string[];
  softdeps: ModuleSoftdeps;
}

/** Files per modinfo call: well below ARG_MAX even for long paths, few processes for ~600 modules. */
const BATCH = 250;

/**
 * Parse `modinfo -0 FILE…`: records are NUL-terminated; each module starts with a
 * `filename:` record. kmod 30 prints `filename:` and `parm:` with a colon and the
 * other fields as `key=value` under -0, so the key ends at the first `:` or `=`.
 * Values may contain newlines (signatures), which is why -0 is used.
 */
export function parseModinfo(output: string): ModuleInfo[] {
  const infos: ModuleInfo[] = [];
  let current: ModuleInfo | undefined;
  for (const record of output.split('\0')) {
    const trimmed = record.replace(/^\n+/, '');
    if (trimmed === '') continue;
    const m = /^([A-Za-z0-9_.-]+)[:=]\s*([\s\S]*)$/.exec(trimmed);
    if (!m) continue;
    const key = m[1]!;
    const value = m[2]!.trim();
    if (key === 'filename') {
      current = { filename: value, firmware: [], softdeps: { pre: [], post: [] } };
      infos.push(current);
    } else if (!current) {
      continue;
    } else if (key === 'firmware') {
      if (value !== '' && !current.firmware.includes(value)) current.firmware.push(value);
    } else if (key === 'softdep') {
      parseSoftdepTokens(value.split(/\s+/), current.softdeps);
    }
  }
  return infos;
}

/**
 * Firmware and soft dependencies of module files, a few modinfo processes for all of
 * them (modinfo takes many files per call), keyed by module name. A file modinfo cannot read (e.g. a .ko.gz
 * with a kmod built without zlib) is reported in the log, not fatal.
 */
export async function readModinfo(files: readonly string[], logger: Logger): Promise<Map<string, ModuleInfo>> {
  if (files.length === 0) return new Map();
  const limit = pLimit(2);
  const batches: string[][] = [];
  for (let i = 0; i < files.length; i += BATCH) batches.push(files.slice(i, i + BATCH));
  const results = await Promise.all(
    batches.map((batch) =>
      limit(async () => {
        const result = await run('modinfo', ['-0', ...batch], { okExitCodes: [0, 1] });
        if (result.exitCode !== 0) {
          logger.warn({ stderr: result.stderr.trim() }, 'modinfo could not read some modules; their firmware and soft dependencies are unknown');
        }
        return parseModinfo(result.stdout);
      }),
    ),
  );
  // Keyed by module name: modinfo may print the file name in another spelling than given.
  const byName = new Map<string, ModuleInfo>();
  for (const info of results.flat()) byName.set(moduleNameFromPath(info.filename), info);
  return byName;
}
