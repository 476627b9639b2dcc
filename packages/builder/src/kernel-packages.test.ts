import { describe, expect, it } from 'vitest';
import { kernelModulePackageFilter } from './build.js';

describe('KernelModulePackages=', () => {
  it('selects the parts of the closure the globs name', () => {
    const debian = kernelModulePackageFilter({ kernelPackage: 'linux-image-amd64', kernelModulePackages: ['linux-image-*'] });
    expect(['linux-image-amd64', 'linux-image-6.12.48+deb13-amd64', 'linux-base', 'kmod', 'initramfs-tools'].filter(debian)).toEqual(['linux-image-amd64', 'linux-image-6.12.48+deb13-amd64']);
    const fedora = kernelModulePackageFilter({ kernelPackage: 'kernel-modules', kernelModulePackages: ['kernel-core', 'kernel-modules*'] });
    expect(['kernel-core', 'kernel-modules', 'kernel-modules-core', 'kernel-core-extra', 'systemd'].filter(fedora)).toEqual(['kernel-core', 'kernel-modules', 'kernel-modules-core']);
  });
  it('without globs, only KernelPackage= itself', () => {
    const only = kernelModulePackageFilter({ kernelPackage: 'my-kernel', kernelModulePackages: [] });
    expect(['my-kernel', 'my-kernel-extra', 'linux-image-amd64'].filter(only)).toEqual(['my-kernel']);
  });
});
