import { rmSync } from 'node:fs';

/**
 * Paths this process must not leave behind if it is stopped by a signal: temporary
 * outputs and work directories. The library registers them; the CLI (the only place
 * that ends the process) removes them in its SIGINT/SIGTERM handler. A SIGKILL cannot be
 * handled: the owner token in their names lets the next run remove them instead.
 */
const pending = new Set<string>();

export function registerCleanup(path: string): void {
  pending.add(path);
}

export function unregisterCleanup(path: string): void {
  pending.delete(path);
}

/** Remove everything registered, synchronously (runs in a signal handler). Returns the paths removed. */
export function runCleanupsSync(): string[] {
  const removed: string[] = [];
  for (const path of [...pending].reverse()) {
    try {
      rmSync(path, { recursive: true, force: true, maxRetries: 3 });
      removed.push(path);
    } catch {
      // Best effort: the next run removes what is left (its owner is gone by then).
    }
    pending.delete(path);
  }
  return removed;
}
