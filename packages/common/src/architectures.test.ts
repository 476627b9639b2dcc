import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ARCHITECTURES, ARCHITECTURE_NAMES, architectureEntry, hostArchitecture } from './architectures.js';

function systemdKnownTypes(): Map<string, string> | undefined {
  try {
    const out = execFileSync('systemd-id128', ['show'], { encoding: 'utf8' });
    return new Map(out.trim().split('\n').map((l) => l.trim().split(/\s+/) as [string, string]));
  } catch {
    return undefined;
  }
}

describe('architecture table', () => {
  it('each row is keyed by its own name, with distinct GUIDs', () => {
    const guids = new Set<string>();
    for (const name of ARCHITECTURE_NAMES) {
      expect(ARCHITECTURES[name].name).toBe(name);
      for (const guid of Object.values(ARCHITECTURES[name].partitionTypes)) {
        expect(guid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        guids.add(guid);
      }
    }
    expect(guids.size).toBe(ARCHITECTURE_NAMES.length * 6);
    expect(architectureEntry('pdp11')).toBeUndefined();
    expect(architectureEntry('toString')).toBeUndefined();
    expect(hostArchitecture()?.node).toBe(process.arch);
  });

  // The specification's own table, as systemd knows it (root-arm64-verity …).
  it.runIf(systemdKnownTypes() !== undefined)('matches systemd-id128 show, GUID by GUID', () => {
    const known = systemdKnownTypes()!;
    for (const name of ARCHITECTURE_NAMES) {
      for (const [role, guid] of Object.entries(ARCHITECTURES[name].partitionTypes)) {
        const key = role.replace(/^(root|usr)/, `$1-${name}`);
        expect(guid.replace(/-/g, ''), key).toBe(known.get(key));
      }
    }
  });
});
