import { describe, expect, it } from 'vitest';
import { explainAptFailure } from './apt.js';
import { explainDnfFailure } from './dnf.js';

const result = (stdout: string, stderr: string) => ({ command: 'x', exitCode: 100, stdout, stderr });

describe('a bad repository signature has its own code (not MIRROR_UNREACHABLE)', () => {
  it('apt: NO_PUBKEY', () => {
    const e = explainAptFailure(result('', 'W: GPG error: http://deb.debian.org/debian bookworm InRelease: The following signatures couldn\'t be verified because the public key is not available: NO_PUBKEY 6ED0E7B82643E131\nE: The repository is not signed.\n'));
    expect(e?.code).toBe('SIGNATURE');
    expect(e?.message).toMatch(/^repository signature check failed: /);
  });
  it('dnf: an unsigned package', () => {
    const e = explainDnfFailure(result('', 'Package mk-app-1.0-1.noarch.rpm is not signed\nError: GPG check FAILED\n'));
    expect(e?.code).toBe('SIGNATURE');
  });
});
