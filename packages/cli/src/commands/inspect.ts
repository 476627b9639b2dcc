import { Args, Flags } from '@oclif/core';
import { BaseCommand } from '../base.js';

/**
 * Buffered stdout with backpressure: inspect streams its listing (millions of entries
 * must not be held in memory); a closed pipe (`| head`) ends the listing quietly.
 */
class Output {
  private buffer = '';
  closed = false;
  constructor() {
    process.stdout.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE') this.closed = true;
      else throw error;
    });
  }
  async write(text: string): Promise<void> {
    this.buffer += text;
    if (this.buffer.length >= 1 << 16) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.buffer === '' || this.closed) return;
    const text = this.buffer;
    this.buffer = '';
    if (process.stdout.write(text)) return;
    // Not events.once: it rejects on 'error', and EPIPE is the normal end here.
    await new Promise<void>((resolve) => {
      const done = () => {
        process.stdout.off('drain', done);
        process.stdout.off('close', done);
        process.stdout.off('error', done);
        resolve();
      };
      process.stdout.on('drain', done).on('close', done).on('error', done);
    });
  }
}

export default class Inspect extends BaseCommand {
  static override description = 'List the segments and entries of an initrd image (like lsinitrd)';

  static override examples = ['<%= config.bin %> inspect /boot/initrd.img', '<%= config.bin %> inspect initrd.img --json'];

  static override args = {
    image: Args.string({ description: 'initrd image (newc cpio segments, compressed or not)', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ description: 'print segments, entries and totals as JSON' }),
    'no-entries': Flags.boolean({ description: 'show segments and totals only' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Inspect);
    const { inspectEvents, formatInspectEvent } = await import('@mkinitrd-pkg/packer');
    const out = new Output();
    const events = inspectEvents(args.image, { entries: !flags['no-entries'] });
    if (!flags.json) {
      for await (const event of events) {
        await out.write(formatInspectEvent(event));
        if (out.closed) return;
      }
      await out.flush();
      return;
    }
    // The same object as JSON.stringify(inspectImage(…)) would give, written as it comes:
    // entries first (one per line), then segments and totals, which are known at the end.
    const segments: unknown[] = [];
    let first = true;
    for await (const event of events) {
      if (out.closed) return;
      switch (event.kind) {
        case 'image':
          await out.write(`{\n  "path": ${JSON.stringify(event.path)},\n  "size": ${event.size},\n  "entries": [`);
          break;
        case 'entry':
          await out.write(`${first ? '' : ','}\n    ${JSON.stringify(event.entry)}`);
          first = false;
          break;
        case 'segment-end':
          segments.push(event.segment);
          break;
        case 'end':
          await out.write(`${first ? '' : '\n  '}],\n  "segments": ${JSON.stringify(segments)},\n  "totals": ${JSON.stringify(event.totals)}\n}\n`);
          break;
        case 'segment':
          break;
      }
    }
    await out.flush();
  }
}
