import { describe, expect, it } from 'vitest';
import { emptyConfig, type ImageConfig } from '@mkinitrd-pkg/config';
import type { RunResult } from '@mkinitrd-pkg/common';
import { dnfRepositories, explainDnfFailure, parseDnfTransaction, parseRpmQuery, parseScriptletFailures, renderDnfConf, rpmArchitecture } from './dnf.js';

// Output captured from dnf 4.14 / rpm 4.18 on Debian 12 against the test repository.
const result = (stdout: string, stderr: string, exitCode = 1): RunResult => ({ command: 'dnf install', exitCode, stdout, stderr });

function config(overrides: Partial<ImageConfig> = {}): ImageConfig {
  return { ...emptyConfig('fedora'), distribution: 'fedora', release: '43', packageManager: 'dnf', mirror: 'file:///srv/repo', ...overrides };
}

describe('explainDnfFailure', () => {
  it('unknown package → PACKAGE_NOT_FOUND naming it', () => {
    const e = explainDnfFailure(result('mirror  2.0 MB/s | 2.0 kB 00:00\nNo match for argument: nope-pkg\n', 'Error: Unable to find a match: nope-pkg\n'));
    expect(e?.code).toBe('PACKAGE_NOT_FOUND');
    expect(e?.message).toBe('package not found: nope-pkg');
  });

  it('several unknown packages are all named', () => {
    const e = explainDnfFailure(result('No match for argument: a\nNo match for argument: b\n', 'Error: Unable to find a match: a b\n'));
    expect(e?.message).toBe('packages not found: a b');
  });

  it('unreachable file:// and http repositories → MIRROR_UNREACHABLE with the curl reason', () => {
    const file = explainDnfFailure(
      result(
        'mirror  0.0  B/s |   0  B     00:00\n',
        "Errors during downloading metadata for repository 'mirror':\n  - Curl error (37): Couldn't read a file:// file for file:///nonexistent/repodata/repomd.xml [Couldn't open file /nonexistent/repodata/repomd.xml]\nError: Failed to download metadata for repo 'mirror': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried\n",
      ),
    );
    expect(file?.code).toBe('MIRROR_UNREACHABLE');
    expect(file?.message).toBe("repository unreachable (mirror): Couldn't read a file:// file for file:///nonexistent/repodata/repomd.xml");
    const http = explainDnfFailure(
      result(
        '',
        "Errors during downloading metadata for repository 'mirror':\n  - Curl error (7): Couldn't connect to server for http://127.0.0.1:9/repodata/repomd.xml [Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't connect to server]\nError: Failed to download metadata for repo 'mirror': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried\n",
      ),
    );
    expect(http?.code).toBe('MIRROR_UNREACHABLE');
    expect(http?.message).toContain('127.0.0.1:9');
  });

  it('broken dependency → DEPENDENCY_CONFLICT with the first problem line', () => {
    const e = explainDnfFailure(
      result(
        "(try to add '--skip-broken' to skip uninstallable packages)\n",
        'Error: \n Problem: conflicting requests\n  - nothing provides mk-absent-capability needed by mk-broken-1.0-1.noarch\n',
      ),
    );
    expect(e?.code).toBe('DEPENDENCY_CONFLICT');
    expect(e?.message).toBe('dependency problem: nothing provides mk-absent-capability needed by mk-broken-1.0-1.noarch');
  });

  it('unsigned packages and wrong keys → a signature line with a RepositoryKey= hint', () => {
    const unsigned = explainDnfFailure(result('Downloading Packages:\nPackage mk-app-1.0-1.noarch.rpm is not signed\nPackage mk-lib-1.0-1.noarch.rpm is not signed\n', 'Error: GPG check FAILED\n'));
    expect(unsigned?.message).toBe('repository signature check failed: Package mk-app-1.0-1.noarch.rpm is not signed');
    expect(unsigned?.hint).toMatch(/RepositoryKey=.*RepositoryKeyCheck=no/);
    const wrong = explainDnfFailure(
      result(
        "Importing GPG key 0x1234:\n From       : /tmp/other.asc\nKey imported successfully\nImport of key(s) didn't help, wrong key(s)?\nPublic key for mk-app-1.0-1.noarch.rpm is not installed. Failing package is: mk-app-1.0-1.noarch\n",
        'Error: GPG check FAILED\n',
      ),
    );
    expect(wrong?.message).toBe('repository signature check failed: Public key for mk-app-1.0-1.noarch.rpm is not installed');
  });

  it('a failing %pre keeps the package out → SCRIPTLET_FAILED', () => {
    const e = explainDnfFailure(
      result(
        'Running scriptlet: mk-prefails-1.0-1.noarch   2/2\nerror: %prein(mk-prefails-1.0-1.noarch) scriptlet failed, exit status 3\n\nFailed:\n  mk-prefails-1.0-1.noarch\n',
        'Error in PREIN scriptlet in rpm package mk-prefails\nError: Transaction failed\n',
      ),
    );
    expect(e?.code).toBe('SCRIPTLET_FAILED');
    expect(e?.message).toBe('%pre scriptlet of mk-prefails-1.0-1.noarch failed (exit status 3); the package was not installed');
  });

  it('messages are one line', () => {
    const e = explainDnfFailure(result('', 'Error: something new\n'));
    expect(e?.code).toBe('COMMAND_FAILED');
    expect(e?.message).toBe('dnf failed: something new');
  });
});

describe('parseScriptletFailures', () => {
  it('reads rpm and dnf lines once per failure, rpm’s wins', () => {
    const text =
      'mk-fails: failing on purpose\nwarning: %post(mk-fails-1.0-1.noarch) scriptlet failed, exit status 1\n\nError in POSTIN scriptlet in rpm package mk-fails\nError in POSTTRANS scriptlet in rpm package other\n';
    expect(parseScriptletFailures(text)).toEqual([
      { package: 'mk-fails-1.0-1.noarch', scriptlet: '%post', message: '%post scriptlet of mk-fails-1.0-1.noarch failed (exit status 1)', fatal: false },
      { package: 'other', scriptlet: '%posttrans', message: '%posttrans scriptlet of other failed', fatal: false },
    ]);
  });
  it('finds nothing in a clean run', () => {
    expect(parseScriptletFailures('Running scriptlet: mk-base-1.0-1.noarch 3/5\nComplete!\n')).toEqual([]);
  });
});

describe('parseDnfTransaction', () => {
  it('reads rows, also when dnf wraps a long name at 80 columns', () => {
    const out = `Dependencies resolved.
================================================================================
 Package                      Arch      Version              Repository   Size
================================================================================
Installing:
 kernel-modules-core          noarch    6.99.0-1.mk          mirror      6.4 k
Installing dependencies:
 a-package-with-a-very-long-name-that-wraps-the-table
                              x86_64    1:2.0-3.fc43         repo-0123   1.0 M
 mk-lib                       noarch    1.0-1                mirror      6.6 k
     replacing  old-lib.noarch 0.9-1

Transaction Summary
================================================================================
Install  3 Packages
`;
    expect(parseDnfTransaction(out)).toEqual([
      { name: 'kernel-modules-core', architecture: 'noarch', version: '6.99.0-1.mk', repository: 'mirror' },
      { name: 'a-package-with-a-very-long-name-that-wraps-the-table', architecture: 'x86_64', version: '1:2.0-3.fc43', repository: 'repo-0123' },
      { name: 'mk-lib', architecture: 'noarch', version: '1.0-1', repository: 'mirror' },
    ]);
  });
});

describe('parseRpmQuery', () => {
  it('sorts, shows epochs, leaves imported keys out', () => {
    const out = 'mk-lib\t1.0-1\tnoarch\t1700000000\ngpg-pubkey\t2a80a84f-6b022a87\t(none)\t1700000001\nbash\t1:5.2-1\tx86_64\t1700000005\n';
    expect(parseRpmQuery(out)).toEqual([
      { name: 'bash', version: '1:5.2-1', architecture: 'x86_64', buildTime: 1700000005 },
      { name: 'mk-lib', version: '1.0-1', architecture: 'noarch', buildTime: 1700000000 },
    ]);
  });
});

describe('dnf configuration', () => {
  it('gives Mirror= and each Repositories= entry a stable id', () => {
    const a = dnfRepositories(config({ repositories: ['file:///srv/extra', 'https://example.org/updates/'] }));
    const b = dnfRepositories(config({ repositories: ['https://example.org/updates/', 'file:///srv/extra'] }));
    expect(a[0]).toEqual({ id: 'mirror', baseurl: 'file:///srv/repo' });
    expect(a.map((r) => r.id).sort()).toEqual(b.map((r) => r.id).sort());
    expect(a[1]!.id).toMatch(/^repo-[0-9a-f]{12}$/);
  });
  it('rejects an apt-style repository line', () => {
    expect(() => dnfRepositories(config({ repositories: ['http://x bookworm main'] }))).toThrow(/one baseurl/);
  });
  it('writes gpgcheck and gpgkey only when key checking is on', () => {
    const on = renderDnfConf(config(), dnfRepositories(config()), ['file:///k.asc'], '/vars');
    expect(on).toMatch(/^gpgcheck=1$/m);
    expect(on).toMatch(/^gpgkey=file:\/\/\/k\.asc$/m);
    expect(on).toMatch(/^reposdir=\/dev\/null$/m);
    expect(on).toMatch(/^plugins=0$/m);
    const off = renderDnfConf(config({ repositoryKeyCheck: false }), dnfRepositories(config()), [], '/vars');
    expect(off).toMatch(/^gpgcheck=0$/m);
    expect(off).not.toMatch(/gpgkey/);
  });
  it('maps architectures to rpm names', () => {
    expect(rpmArchitecture(config())).toBe('x86_64');
    expect(rpmArchitecture(config({ architecture: 'arm64' }))).toBe('aarch64');
    expect(() => rpmArchitecture(config({ architecture: 'pdp11' }))).toThrow(/not known for dnf/);
  });
});
