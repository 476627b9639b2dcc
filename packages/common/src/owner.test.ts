import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockFile } from './owner.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-lock-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('lockFile (flock held by a child process)', () => {
  it('shared holders coexist; an exclusive one is refused while they hold it, granted after', async () => {
    const path = join(dir, 'lock');
    const a = await lockFile(path, { shared: true });
    const b = await lockFile(path, { shared: true });
    expect(a && b).toBeTruthy();
    expect(await lockFile(path, { wait: false })).toBeUndefined();
    await a!.release();
    expect(await lockFile(path, { wait: false })).toBeUndefined();
    await b!.release();
    const x = await lockFile(path, { wait: false });
    expect(x).toBeDefined();
    expect(await lockFile(path, { shared: true, wait: false })).toBeUndefined();
    await x!.release();
  });

  it('the lock of a process killed with SIGKILL is free again', async () => {
    const path = join(dir, 'lock-killed');
    // Another node process takes the lock and is killed before it could release it.
    const script = `import { lockFile } from ${JSON.stringify(new URL('./owner.ts', import.meta.url).pathname.replace(/\.ts$/, '.js').replace('/src/', '/dist/'))};
      await lockFile(${JSON.stringify(path)}, { shared: true }); console.log('held'); setInterval(() => {}, 1000);`;
    const child = spawn('node', ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('held') && resolve()));
    expect(await lockFile(path, { wait: false })).toBeUndefined();
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // The flock child sees EOF on its stdin and exits; poll briefly (bounded).
    let lock;
    for (let i = 0; i < 100 && !lock; i++) {
      lock = await lockFile(path, { wait: false });
      if (!lock) await new Promise((r) => setTimeout(r, 50));
    }
    expect(lock).toBeDefined();
    await lock!.release();
  });
});
