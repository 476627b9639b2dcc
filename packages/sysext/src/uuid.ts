import { createHash } from 'node:crypto';

/** 16 bytes → the canonical 8-4-4-4-12 string, bytes in order (as sd_id128_to_uuid_string). */
export function formatUuid(bytes: Uint8Array): string {
  if (bytes.length < 16) throw new Error('a UUID needs 16 bytes');
  const hex = Buffer.from(bytes.subarray(0, 16)).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/**
 * A stable UUID derived from content: sha256 over a purpose label and the inputs, marked
 * as RFC 4122 version 4 / variant 1 so tools that check the format accept it. Same
 * inputs → same UUID, which is what makes the image reproducible.
 */
export function derivedUuid(purpose: string, ...inputs: string[]): string {
  const hash = createHash('sha256').update(purpose);
  for (const input of inputs) hash.update('\0').update(input);
  const b = hash.digest();
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return formatUuid(b);
}

/**
 * The Discoverable Partitions Specification ties a verity pair to its root hash: the
 * data partition's UUID is the first 128 bits of the root hash, the verity partition's
 * the last 128 bits (systemd-repart does the same, without touching version bits).
 */
export function rootHashUuids(roothashHex: string): { data: string; verity: string } {
  const rh = Buffer.from(roothashHex, 'hex');
  if (rh.length < 32) throw new Error(`root hash too short: ${roothashHex}`);
  return { data: formatUuid(rh.subarray(0, 16)), verity: formatUuid(rh.subarray(rh.length - 16)) };
}
