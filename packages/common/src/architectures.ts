/**
 * One row per CPU architecture: every name and number a build needs for it. Adding an
 * architecture is one row here (and a preset that sets Architecture=).
 *
 * Partition type GUIDs: UAPI Group, "Discoverable Partitions Specification"
 * (https://uapi-group.org/specifications/specs/discoverable_partitions_specification/),
 * checked against `systemd-id128 show` of systemd 252. systemd-dissect and systemd-sysext
 * only accept an extension whose partition types are those of the architecture they run
 * on (or its ARCHITECTURE=), so an arm64 extension needs arm64's types.
 */
export interface PartitionTypes {
  readonly root: string;
  readonly 'root-verity': string;
  readonly 'root-verity-sig': string;
  readonly usr: string;
  readonly 'usr-verity': string;
  readonly 'usr-verity-sig': string;
}

export interface ArchitectureEntry {
  /** systemd's and mkosi's name: Architecture=, os-release ARCHITECTURE=. */
  readonly name: string;
  /** dpkg's architecture (apt's APT::Architecture). */
  readonly debian: string;
  /** rpm's architecture (dnf --forcearch). */
  readonly rpm: string;
  /** Node's process.arch on such a machine: whether binaries of this architecture run here natively. */
  readonly node: string;
  /** systemd-boot's EFI suffix (linux<efi>.efi.stub), or undefined where there is no UEFI. */
  readonly efi: string | undefined;
  readonly partitionTypes: PartitionTypes;
}

export const ARCHITECTURES = {
  'x86-64': {
    name: 'x86-64',
    debian: 'amd64',
    rpm: 'x86_64',
    node: 'x64',
    efi: 'x64',
    partitionTypes: {
      root: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
      'root-verity': '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
      'root-verity-sig': '41092b05-9fc8-4523-994f-2def0408b176',
      usr: '8484680c-9521-48c6-9c11-b0720656f69e',
      'usr-verity': '77ff5f63-e7b6-4633-acf4-1565b864c0e6',
      'usr-verity-sig': 'e7bb33fb-06cf-4e81-8273-e543b413e2e2',
    },
  },
  arm64: {
    name: 'arm64',
    debian: 'arm64',
    rpm: 'aarch64',
    node: 'arm64',
    efi: 'aa64',
    partitionTypes: {
      root: 'b921b045-1df0-41c3-af44-4c6f280d3fae',
      'root-verity': 'df3300ce-d69f-4c92-978c-9bfb0f38d820',
      'root-verity-sig': '6db69de6-29f4-4758-a7a5-962190f00ce3',
      usr: 'b0e01050-ee5f-4390-949a-9101b17104e9',
      'usr-verity': '6e11a4e7-fbca-4ded-b9e9-e1a512bb664e',
      'usr-verity-sig': 'c23ce4ff-44bd-4b00-b2d4-b41b3419e02a',
    },
  },
  x86: {
    name: 'x86',
    debian: 'i386',
    rpm: 'i686',
    node: 'ia32',
    efi: 'ia32',
    partitionTypes: {
      root: '44479540-f297-41b2-9af7-d131d5f0458a',
      'root-verity': 'd13c5d3b-b5d1-422a-b29f-9454fdc89d76',
      'root-verity-sig': '5996fc05-109c-48de-808b-23fa0830b676',
      usr: '75250d76-8cc6-458e-bd66-bd47cc81a812',
      'usr-verity': '8f461b0d-14ee-4e81-9aa9-049b6fb97abd',
      'usr-verity-sig': '974a71c0-de41-43c3-be5d-5c5ccd1ad2c0',
    },
  },
  arm: {
    name: 'arm',
    debian: 'armhf',
    rpm: 'armv7hl',
    node: 'arm',
    efi: 'arm',
    partitionTypes: {
      root: '69dad710-2ce4-4e3c-b16c-21a1d49abed3',
      'root-verity': '7386cdf2-203c-47a9-a498-f2ecce45a2d6',
      'root-verity-sig': '42b0455f-eb11-491d-98d3-56145ba9d037',
      usr: '7d0359a3-02b3-4f0a-865c-654403e70625',
      'usr-verity': 'c215d751-7bcd-4649-be90-6627490a4c05',
      'usr-verity-sig': 'd7ff812f-37d1-4902-a810-d76ba57b975a',
    },
  },
  riscv64: {
    name: 'riscv64',
    debian: 'riscv64',
    rpm: 'riscv64',
    node: 'riscv64',
    efi: 'riscv64',
    partitionTypes: {
      root: '72ec70a6-cf74-40e6-bd49-4bda08e8f224',
      'root-verity': 'b6ed5582-440b-4209-b8da-5ff7c419ea3d',
      'root-verity-sig': 'efe0f087-ea8d-4469-821a-4c2a96a8386a',
      usr: 'beaec34b-8442-439b-a40b-984381ed097d',
      'usr-verity': '8f1056be-9b05-47c4-81d6-be53128e5b54',
      'usr-verity-sig': 'd2f9000a-7a18-453f-b5cd-4d32f77a7b32',
    },
  },
  'ppc64-le': {
    name: 'ppc64-le',
    debian: 'ppc64el',
    rpm: 'ppc64le',
    node: 'ppc64',
    efi: undefined,
    partitionTypes: {
      root: 'c31c45e6-3f39-412e-80fb-4809c4980599',
      'root-verity': '906bd944-4589-4aae-a4e4-dd983917446a',
      'root-verity-sig': 'd4a236e7-e873-4c07-bf1d-bf6cf7f1c3c6',
      usr: '15bb03af-77e7-4d4a-b12b-c0d084f7491c',
      'usr-verity': 'ee2b9983-21e8-4153-86d9-b6901a54d1ce',
      'usr-verity-sig': 'c8bfbd1e-268e-4521-8bba-bf314c399557',
    },
  },
  s390x: {
    name: 's390x',
    debian: 's390x',
    rpm: 's390x',
    node: 's390x',
    efi: undefined,
    partitionTypes: {
      root: '5eead9a9-fe09-4a1e-a1d7-520d00531306',
      'root-verity': 'b325bfbe-c7be-4ab8-8357-139e652d2f6b',
      'root-verity-sig': 'c80187a5-73a3-491a-901a-017c3fa953e9',
      usr: '8a4f5770-50aa-4ed3-874a-99b710db6fea',
      'usr-verity': '31741cc4-1a2a-4111-a581-e00b447d2d06',
      'usr-verity-sig': '3f324816-667b-46ae-86ee-9b0c0c6c11b4',
    },
  },
} as const satisfies Record<string, ArchitectureEntry>;

export type ArchitectureName = keyof typeof ARCHITECTURES;
export const ARCHITECTURE_NAMES = Object.keys(ARCHITECTURES) as ArchitectureName[];

export function isArchitectureName(value: string): value is ArchitectureName {
  return Object.hasOwn(ARCHITECTURES, value);
}

/** The row of an Architecture= value; undefined for one the table does not know. */
export function architectureEntry(name: string): ArchitectureEntry | undefined {
  return isArchitectureName(name) ? ARCHITECTURES[name] : undefined;
}

/** The row of the machine this program runs on, if the table knows it. */
export function hostArchitecture(): ArchitectureEntry | undefined {
  return Object.values(ARCHITECTURES).find((a) => a.node === process.arch);
}
