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
export declare function bootQemu(options: { kernel: string; initrd: string; rootImage?: string; append: string; memoryMb?: number }): BootSession;
export declare function enterEmergencyShell(session: BootSession, timeoutMs?: number): Promise<void>;
