import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkOutputPath, createAtomicOutput, removeStaleOutputTemporaries, withAtomicOutput } from './fs.js';
import { exitedOwnerToken, isOwnerAlive, ownerToken } from './owner.js';
import { runCleanupsSync } from './cleanup.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mkinitrd-pkg-fs-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));


describe('output paths are checked before any work', () => {
  it('refuses a directory, a FIFO and a missing directory with one clear line', async () => {
    await mkdir(join(dir, 'adir'));
    await expect(checkOutputPath(join(dir, 'adir'))).rejects.toThrow(/exists and is a directory/);
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    await expect(checkOutputPath(join(dir, 'fifo'))).rejects.toThrow(/exists and is not a regular file/);
    await expect(checkOutputPath(join(dir, 'nope', 'x.img'))).rejects.toThrow(/directory does not exist/);
    await expect(checkOutputPath(join(dir, 'ok.img'))).resolves.toBe(join(dir, 'ok.img'));
    // The rename would otherwise replace the device node /dev/null with a file.
    await expect(checkOutputPath('/dev/null')).rejects.toThrow(/\/dev\/null exists and is not a regular file/);
  });

  it('a commit whose rename fails leaves no temporary (commit is done only after the rename)', async () => {
    const target = join(dir, 'later-a-dir');
    const out = await createAtomicOutput(target);
    await out.handle.writeFile(Buffer.alloc(1 << 20));
    await mkdir(target); // appears while the image is written
    await mkdir(join(target, 'x'));
    await expect(out.commit()).rejects.toThrow();
    await out.abort();
    expect((await readdir(dir)).filter((n) => n.startsWith('.later-a-dir'))).toEqual([]);
  });

  it('withAtomicOutput onto an existing directory fails before writing and leaves nothing', async () => {
    let wrote = false;
    await expect(withAtomicOutput(join(dir, 'adir'), async () => void (wrote = true))).rejects.toThrow(/is a directory/);
    expect(wrote).toBe(false);
    expect((await readdir(dir)).filter((n) => n.startsWith('.adir'))).toEqual([]);
  });
});

describe('stale temporaries: removed only when their owner is gone', () => {
  it('owner tokens name one process: a dead one is not alive, this one is', async () => {
    expect(isOwnerAlive(ownerToken())).toBe(true);
    expect(isOwnerAlive(await exitedOwnerToken())).toBe(false);
    // A reused pid with another start time is not the owner.
    expect(isOwnerAlive(`${process.pid}-1`)).toBe(false);
  });

  it('removes a dead owner temporary, keeps a live one and anything else', async () => {
    const sub = join(dir, 'stale');
    await mkdir(sub);
    const dead = `.img.${await exitedOwnerToken()}.0123456789ab.tmp`;
    const live = `.img.${ownerToken()}.0123456789ab.tmp`;
    const other = `.img.notours.tmp`;
    const otherName = `.other.${await exitedOwnerToken()}.0123456789ab.tmp`;
    for (const n of [dead, live, other, otherName]) await writeFile(join(sub, n), 'x');
    await mkdir(join(sub, `.img.${await exitedOwnerToken()}.aaaaaaaaaaaa.tmp`)); // not a regular file: left alone
    const removed = await removeStaleOutputTemporaries(sub, 'img');
    expect(removed).toEqual([join(sub, dead)]);
    const left = await readdir(sub);
    expect(left).toHaveLength(4);
    expect(left).toEqual(expect.arrayContaining([live, other, otherName]));
  });

  it('a signal handler removes the temporary of an output being written', async () => {
    const out = await createAtomicOutput(join(dir, 'interrupted.img'));
    await out.handle.writeFile('partial');
    expect(runCleanupsSync()).toContain(out.tempPath);
    expect((await readdir(dir)).filter((n) => n.includes('interrupted'))).toEqual([]);
    await out.abort();
  });
});
