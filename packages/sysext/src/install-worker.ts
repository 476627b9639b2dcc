/**
 * The package-install step of a sysext build, run as its own process inside the
 * private mount (and PID) namespace that layer.ts sets up — where the overlay over the
 * base is mounted. The resolver runs unchanged against the merged directory (its own
 * nested namespace for /dev, /proc, /sys works inside ours). Communicates by files:
 * argv[2] is the request JSON; the result (or the error) is written to request.resultFile.
 */
import { writeFile, readFile } from 'node:fs/promises';
import { createLogger, isUserError } from '@mkinitrd-pkg/common';
import { createResolver } from '@mkinitrd-pkg/resolver';
import { findDeletions } from './tree.js';
import type { WorkerRequest, WorkerResponse } from './layer.js';

async function main(): Promise<void> {
  const request = JSON.parse(await readFile(process.argv[2]!, 'utf8')) as WorkerRequest;
  let response: WorkerResponse;
  try {
    const logger = createLogger({ level: request.logLevel as never, pretty: request.prettyLogs });
    const resolver = createResolver(request.config.packageManager);
    const before = await resolver.listInstalled(request.root, request.config);
    const install = await resolver.install({
      root: request.root,
      config: request.config,
      packages: request.packages,
      cacheDir: request.cacheDir,
      ...(request.sourceDateEpoch !== undefined && { sourceDateEpoch: request.sourceDateEpoch }),
      logger,
    });
    const deletions = request.upper && request.base ? await findDeletions(request.upper, request.base, request.root, request.ignore) : [];
    response = { ok: true, before, install, deletions };
  } catch (error) {
    response = {
      ok: false,
      error: isUserError(error)
        ? { userError: true, code: error.code, message: error.message, hint: error.hint }
        : { userError: false, message: error instanceof Error ? error.message : String(error), stack: error instanceof Error ? error.stack : undefined },
    };
  }
  await writeFile(request.resultFile, JSON.stringify(response));
}

await main();
