export declare function stagedKernelModules(cacheDir: string, kver: string): string | undefined;
export interface DracutResult {
  image: string;
  bytes: number;
  seconds: number;
  modules: string[];
  dracutVersion: string;
  kver: string;
  cached: boolean;
}
export declare function dracutNoHostonly(options: { modulesDir: string; kver: string; cacheDir: string; fresh?: boolean }): DracutResult;
