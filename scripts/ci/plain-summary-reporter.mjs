// A vitest reporter that ends the run with one plain line, "N passed, N failed, N skipped",
// which any CI log reader understands (vitest's own summary is coloured and multi-line).
// A skip must only ever mean "this machine cannot run it": the line before says why, from the
// note a test gives `ctx.skip(note)`; skips without one are named by file, so they show.
import { relative } from 'node:path';

export default class PlainSummaryReporter {
  onTestRunEnd(testModules) {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    const reasons = new Map();
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        const state = result.state;
        if (state === 'passed') counts.passed++;
        else if (state === 'failed') counts.failed++;
        else {
          counts.skipped++;
          const why = result.note ?? `no reason given (${relative(process.cwd(), module.moduleId)})`;
          reasons.set(why, (reasons.get(why) ?? 0) + 1);
        }
      }
      if (module.state() === 'failed' && [...module.children.allTests()].length === 0) counts.failed++;
    }
    // The reasons go on the line before: the last line stays exactly "N passed, N failed,
    // N skipped", which CI log readers parse.
    const why = [...reasons].map(([reason, n]) => `${n} × ${reason}`).join('; ');
    const skipped = counts.skipped ? `\nskipped, because this machine cannot run them: ${why}` : '';
    process.stdout.write(`${skipped}\n${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
  }
}
