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
/** A virtio NIC on QEMU's user-mode network (guest 10.0.2.15, host loopback 10.0.2.2). */
export type UserNet = true | { mac?: string };
export declare function userNetArgs(net: UserNet): string[];
export declare function bootQemu(options: { kernel: string; initrd: string; rootImage?: string; drives?: Drive[]; append: string; memoryMb?: number; net?: UserNet }): BootSession;
export declare function enterEmergencyShell(session: BootSession, timeoutMs?: number): Promise<void>;
export declare const OVMF: { code: string; vars: string; secureCode: string; snakeoilVars: string; snakeoilKey: string; snakeoilCert: string };
export declare function makeEsp(options: { efi: string; extra?: Record<string, string>; sizeMb?: number; dir?: string }): Promise<string>;
export declare function bootQemuUefi(options: { esp: string; rootImage?: string; vars?: string; secure?: boolean; memoryMb?: number }): Promise<BootSession>;
