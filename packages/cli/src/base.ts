import { Command, Flags, type Interfaces } from '@oclif/core';
import { createLogger, setLogger, type Logger } from '@mkinitrd-pkg/common';

/**
 * Every command gets --debug and --log-level and a configured pino logger. Commands stay
 * thin: parse, call one library function, render its result.
 */
export abstract class BaseCommand extends Command {
  static override baseFlags = {
    debug: Flags.boolean({ description: 'show stack traces and debug logs', helpGroup: 'GLOBAL' }),
    'log-level': Flags.option({
      options: ['silent', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const,
      description: 'log verbosity (logs go to stderr)',
      helpGroup: 'GLOBAL',
    })(),
  };

  protected logger!: Logger;

  override async init(): Promise<void> {
    await super.init();
    const { flags } = await this.parse({ flags: this.ctor.flags, baseFlags: (this.ctor as typeof BaseCommand).baseFlags, args: this.ctor.args, strict: this.ctor.strict });
    const level = (flags as Interfaces.InferredFlags<typeof BaseCommand.baseFlags>)['log-level'] ??
      ((flags as { debug?: boolean }).debug ? 'debug' : undefined);
    this.logger = createLogger(level ? { level } : {});
    setLogger(this.logger);
  }

  /** Errors propagate to main(), the one place that maps them to exit codes. */
  protected override async catch(error: Error & { exitCode?: number }): Promise<unknown> {
    throw error;
  }

  protected printJson(value: unknown): void {
    process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  }
}
