import { pino, type Logger, type LevelWithSilent } from 'pino';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';

// pino-pretty is only needed on a TTY; loading it costs start-up time everywhere else.
const require = createRequire(import.meta.url);

export type { Logger };

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Force pretty (true) or JSON (false) output; default: pretty when stderr is a TTY. */
  pretty?: boolean;
}

/**
 * Logs go to stderr so that stdout stays free for data (`--json`). Pretty on a TTY,
 * one JSON object per line otherwise (CI, kernel-install, pipes).
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const usePretty = options.pretty ?? Boolean(process.stderr.isTTY);
  // On a TTY the progress line tells what is happening; logs there are warnings unless
  // asked for (--log-level info). Elsewhere (CI, pipes) every phase is logged as JSON.
  const level: LevelWithSilent =
    options.level ?? (process.env.MKINITRD_PKG_LOG_LEVEL as LevelWithSilent | undefined) ?? (usePretty ? 'warn' : 'info');
  if (usePretty) {
    const pretty = require('pino-pretty') as typeof PinoPretty;
    return pino(
      { level, base: undefined },
      pretty({ destination: 2, sync: true, colorize: true, singleLine: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' }),
    );
  }
  return pino({ level, base: undefined }, pino.destination({ dest: 2, sync: true }));
}

let defaultLogger: Logger | undefined;

/** The process-wide logger; libraries take a logger option and fall back to this. */
export function getLogger(): Logger {
  defaultLogger ??= createLogger();
  return defaultLogger;
}

export function setLogger(logger: Logger): void {
  defaultLogger = logger;
}

/** A logger that discards everything, for library callers that want silence. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
