// Races with the filesystem (issue 10 item 2): a helper process swaps a directory of the
// tree (pack) or of the destination (extract) for a symlink to a directory outside, in a
// loop, while we work. Nothing may be read from or land outside — the operation either
// succeeds or fails with a clear error. Each case is bounded in time.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserError, silentLogger } from '@mkinitrd-pkg/common';
import { packTree } from './pack.js';
import { extractImage } from './extract.js';
import { readImage } from './reader.js';

const SECONDS = 2;
let base: string;

beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'packer-race-'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

/**
 * A separate process (our fs calls are synchronous: an in-process swapper would never
 * run in between) that replaces `dir` by a symlink to `target` and back, in a loop.
 */
function swapper(dir: string, target: string): ChildProcess {
  const script = `
    const fs = require('fs');
    const [dir, target] = process.argv.slice(1);
    // Each state held for 0-20 ms: long enough for a tool to act on either.
    const pause = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.random() * 20);
    for (;;) {
      try {
        fs.renameSync(dir, dir + '.real');
        fs.symlinkSync(target, dir);
        pause();
        fs.unlinkSync(dir);
        fs.renameSync(dir + '.real', dir);
        pause();
      } catch {
        // not there yet, or we lost a step to the tool: put the real one back if we can
        try { fs.renameSync(dir + '.real', dir); } catch {}
      }
    }`;
  return spawn(process.execPath, ['-e', script, dir, target], { stdio: 'ignore' });
}

async function during<T>(child: ChildProcess, work: () => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  const end = Date.now() + SECONDS * 1000;
  try {
    while (Date.now() < end) results.push(await work());
  } finally {
    child.kill('SIGKILL');
  }
  return results;
}

const expectedFailure = (error: unknown) => {
  expect(error).toBeInstanceOf(UserError);
  expect((error as UserError).code).toMatch(/^(FILE_CHANGED|UNSAFE_PATH|IO)$/);
};

describe('a directory swapped for a symlink while we work', () => {
  it('pack never reads through it', { timeout: 60_000 }, async () => {
    const tree = join(base, 'tree');
    const secret = join(base, 'secret');
    mkdirSync(join(tree, 'd'), { recursive: true });
    mkdirSync(secret);
    // Same names and sizes outside: a path re-walked at read time would pass the checks.
    for (let i = 0; i < 1000; i++) writeFileSync(join(tree, 'd', `f${i}`), 'INSIDE\n');
    for (let i = 0; i < 1000; i++) writeFileSync(join(secret, `f${i}`), 'SECRET\n');
    for (let i = 0; i < 50; i++) writeFileSync(join(secret, `s${i}`), 'SECRET\n');
    let packed = 0;
    let refused = 0;
    const image = join(base, 'race.img');
    await during(swapper(join(tree, 'd'), secret), async () => {
      try {
        await packTree({ source: tree, output: image, compression: 'none', logger: silentLogger() });
      } catch (error) {
        expectedFailure(error);
        refused++;
        return;
      }
      packed++;
      const data = readFileSync(image);
      expect(data.includes('SECRET')).toBe(false);
      for await (const m of readImage(image)) expect(m.entry.name).not.toMatch(/(^|\/)s\d+$/);
    });
    expect(packed + refused).toBeGreaterThan(0);
  });

  it('extract never writes through it', { timeout: 60_000 }, async () => {
    // An archive of d/ with many files, made from a tree (no race while packing it).
    const src = join(base, 'src');
    mkdirSync(join(src, 'd/sub'), { recursive: true });
    for (let i = 0; i < 1500; i++) writeFileSync(join(src, 'd', `f${i}`), `x${i}\n`);
    for (let i = 0; i < 200; i++) writeFileSync(join(src, 'd/sub', `g${i}`), `y${i}\n`);
    const image = join(base, 'extract.img');
    await packTree({ source: src, output: image, compression: 'none', logger: silentLogger() });
    const outside = join(base, 'outside');
    mkdirSync(outside);
    let round = 0;
    await during(swapper(join(base, 'dest', 'd'), outside), async () => {
      const dest = join(base, 'dest');
      try {
        await extractImage(image, dest, { logger: silentLogger() });
      } catch (error) {
        expectedFailure(error);
      }
      expect(readdirSync(outside)).toEqual([]);
      round++;
    });
    expect(round).toBeGreaterThan(0);
    expect(readdirSync(outside)).toEqual([]);
  });
});
