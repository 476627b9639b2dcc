import type { ChildProcess } from 'node:child_process';

export declare function hostKernel(): Promise<{ version: string; vmlinuz: string } | undefined>;
export declare const ROOT_MARKER: string;
export declare function makeTestRoot(options: { uuid: string; label: string; before?: string }): Promise<string>;
export interface BootSession {
  process: ChildProcess;
  started: number;
  exited: Promise<number | null>;
  output(): string;
  type(text: string): void;
  kill(): void;
  waitFor(pattern: RegExp | string, timeoutMs: number, from?: number): Promise<string>;
}
export type Drive = string | { file: string; snapshot?: boolean };
export declare function bootQemu(options: { kernel: string; initrd: string; rootImage?: string; drives?: Drive[]; append: string; memoryMb?: number }): BootSession;
export declare function enterEmergencyShell(session: BootSession, timeoutMs?: number): Promise<void>;
export declare const OVMF: { code: string; vars: string; secureCode: string; snakeoilVars: string; snakeoilKey: string; snakeoilCert: string };
export declare function makeEsp(options: { efi: string; extra?: Record<string, string>; sizeMb?: number; dir?: string }): Promise<string>;
export declare function bootQemuUefi(options: { esp: string; rootImage?: string; vars?: string; secure?: boolean; memoryMb?: number }): Promise<BootSession>;
