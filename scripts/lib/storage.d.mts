export declare const STORAGE_CACHE: string;
export declare const ROOT_UUID: string;
export declare const LUKS_UUID: string;
export declare const LUKS_PASSPHRASE: string;
export declare const MD_HOMEHOST: string;
export declare const LAYOUTS: { lvm: string[]; raid: string[]; lvmRaid: string[]; luksLvm: string[] };
export declare const DEVICES: { lvmRoot: string; lvmRaidRoot: string; luksRoot: string };
export declare function storageDisksKey(): string;
export interface StorageDisks {
  dir: string;
  lvm: string[];
  raid: string[];
  lvmRaid: string[];
  luksLvm: string[];
  rootUuid: string;
  luksUuid: string;
  passphrase: string;
  devices: typeof DEVICES;
}
export declare function storageDisks(
  helper: { kernel: string; initrd: string; lvmRaw: string; raidRaw: string },
  options?: { log?: (line: string) => void },
): Promise<StorageDisks>;
