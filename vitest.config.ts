import { defineConfig } from 'vitest/config';

// `npm run test:fast` (MKINITRD_PKG_FAST=1) runs only the unit tests beside the code;
// `npm test` also runs the slow end-to-end tests in test/ (real apt, dnf, QEMU, …).
const fast = process.env.MKINITRD_PKG_FAST === '1';

export default defineConfig({
  test: {
    include: fast ? ['packages/*/src/**/*.test.ts'] : ['packages/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 900_000,
    maxWorkers: 2,
    reporters: ['default', './scripts/ci/plain-summary-reporter.mjs'],
  },
});
