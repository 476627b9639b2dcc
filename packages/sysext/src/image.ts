import { createHash, X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError, run, requireCommands } from '@mkinitrd-pkg/common';
import { derivedUuid } from './uuid.js';

export type SysextFormat = 'squashfs' | 'erofs';
export const FORMATS: readonly SysextFormat[] = ['squashfs', 'erofs'];
/** dm-verity and the partition alignment work in 4 KiB blocks. */
export const BLOCK = 4096;

export const roundUp = (n: number, to: number) => Math.ceil(n / to) * to;

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export interface FilesystemOptions {
  format: SysextFormat;
  source: string;
  output: string;
  sourceDateEpoch: number;
  /** Identity of the tree's content (summarizeTree's digest): erofs's UUID is derived from it. */
  contentDigest: string;
}

/**
 * Make the read-only file system, reproducibly: every inode owned by root, every
 * timestamp SOURCE_DATE_EPOCH, no extended attributes (the staging tree's are the
 * build's, e.g. overlay bookkeeping, not the packages'), sorted directory order.
 * squashfs-tools 4.5 is reproducible by default (-reproducible) and compresses with
 * zstd; erofs-utils 1.5 has lz4/lz4hc only and needs the UUID given (-U), derived here
 * from the content. The size is padded to a multiple of 4 KiB for dm-verity.
 */
export async function makeFilesystem(options: FilesystemOptions): Promise<void> {
  const epoch = String(options.sourceDateEpoch);
  if (options.format === 'squashfs') {
    await requireCommands(['mksquashfs'], 'install squashfs-tools');
    await run('mksquashfs', [
      options.source, options.output,
      '-noappend', '-reproducible', '-all-root', '-no-xattrs',
      '-mkfs-time', epoch, '-all-time', epoch,
      '-comp', 'zstd', '-b', '131072',
      '-quiet', '-no-progress',
    ]);
  } else {
    await requireCommands(['mkfs.erofs'], 'install erofs-utils');
    await run('mkfs.erofs', [
      '-zlz4hc', '-T', epoch, '-U', derivedUuid('mkinitrd-pkg erofs uuid', options.contentDigest, epoch),
      '--all-root', '-x', '-1', '--quiet',
      options.output, options.source,
    ]);
  }
  const size = (await stat(options.output)).size;
  if (size % BLOCK !== 0) await truncate(options.output, roundUp(size, BLOCK));
}

export interface VerityResult {
  roothash: string;
  salt: string;
  uuid: string;
  hashPath: string;
  hashBytes: number;
}

/**
 * dm-verity hash tree for `data` (veritysetup format, in user space, on files): 4 KiB
 * data and hash blocks, sha256, the salt = sha256 of the data and the superblock UUID
 * derived from it, so the same data always gives the same hash tree and root hash.
 */
export async function formatVerity(data: string, hashPath: string): Promise<VerityResult> {
  await requireCommands(['veritysetup'], 'install cryptsetup-bin');
  const salt = await sha256File(data);
  const uuid = derivedUuid('mkinitrd-pkg verity uuid', salt);
  const result = await run('veritysetup', [
    'format', data, hashPath,
    '--hash', 'sha256', '--salt', salt, '--uuid', uuid,
    '--data-block-size', String(BLOCK), '--hash-block-size', String(BLOCK),
  ]);
  const m = /^Root hash:\s+([0-9a-f]{64})\s*$/m.exec(result.stdout);
  if (!m) throw new Error(`veritysetup printed no root hash:\n${result.stdout}`);
  const size = (await stat(hashPath)).size;
  if (size % BLOCK !== 0) await truncate(hashPath, roundUp(size, BLOCK));
  return { roothash: m[1]!, salt, uuid, hashPath, hashBytes: roundUp(size, BLOCK) };
}

export interface SigningIdentity {
  keyPath: string;
  certPath: string;
  /** sha256 of the certificate's DER encoding, hex: what systemd looks keys up by. */
  fingerprint: string;
}

/**
 * Check the key and certificate before any work: both readable, PEM or DER, the key
 * unencrypted and the certificate's public key its counterpart.
 */
export async function loadSigningIdentity(keyPath: string, certPath: string): Promise<SigningIdentity> {
  let certText: Buffer;
  let keyText: Buffer;
  try {
    certText = await readFile(certPath);
  } catch (error) {
    throw new UserError('SIGNING', `cannot read signing certificate ${certPath}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  try {
    keyText = await readFile(keyPath);
  } catch (error) {
    throw new UserError('SIGNING', `cannot read signing key ${keyPath}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certText);
  } catch {
    throw new UserError('SIGNING', `${certPath} is not an X.509 certificate (PEM or DER)`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyText.includes('-----BEGIN') ? { key: keyText, format: 'pem' } : { key: keyText, format: 'der', type: 'pkcs8' });
  } catch (error) {
    const encrypted = /passphrase|encrypted/i.test((error as Error).message) || keyText.includes('ENCRYPTED');
    throw new UserError('SIGNING', `${keyPath} is not a usable private key${encrypted ? ' (it is encrypted)' : ''}`, {
      hint: encrypted ? 'use an unencrypted key file' : 'expected a PEM or DER (PKCS#8) private key, e.g. from openssl req -newkey rsa:2048 -nodes',
    });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new UserError('SIGNING', `signing key ${keyPath} does not belong to certificate ${certPath}`);
  }
  const fingerprint = createHash('sha256').update(cert.raw).digest('hex');
  return { keyPath, certPath, fingerprint };
}

/**
 * PKCS#7 (DER, detached, no certificates, no signed attributes) over the root hash as a
 * hex string — what the kernel's dm-verity and systemd verify (design.md §4).
 */
export async function signRootHash(roothash: string, identity: SigningIdentity, workDir: string): Promise<Buffer> {
  await requireCommands(['openssl'], 'install openssl');
  const input = join(workDir, 'roothash.txt');
  const output = join(workDir, 'roothash.p7s');
  await writeFile(input, roothash);
  await run('openssl', ['smime', '-sign', '-nocerts', '-noattr', '-binary', '-in', input, '-inkey', identity.keyPath, '-signer', identity.certPath, '-outform', 'der', '-out', output], {
    explainFailure: (r) => new UserError('SIGNING', `openssl could not sign with ${identity.keyPath}`, { hint: r.stderr.trim().split('\n')[0] }),
  });
  return readFile(output);
}

/**
 * The root-verity-sig partition's content (Discoverable Partitions Specification): a JSON
 * object, NUL-padded to a multiple of 4 KiB.
 */
export function signaturePartition(roothash: string, fingerprint: string, signature: Buffer): Buffer {
  const json = JSON.stringify({ rootHash: roothash, certificateFingerprint: fingerprint, signature: signature.toString('base64') });
  const body = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(roundUp(body.length, BLOCK));
  body.copy(out);
  return out;
}
