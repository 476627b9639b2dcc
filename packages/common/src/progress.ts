/**
 * Progress for long work. On a TTY it redraws one status line on stderr; elsewhere it
 * is silent (the logger records phases), so CI logs and pipes stay clean.
 */
export interface Progress {
  update(message: string, done?: number, total?: number): void;
  done(message?: string): void;
}

export function createProgress(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY || process.env.CI) {
    return { update() {}, done() {} };
  }
  let last = 0;
  const columns = () => Math.max(20, (stream.columns ?? 80) - 1);
  const draw = (text: string) => {
    stream.write(`\r\x1b[2K${text.slice(0, columns())}`);
  };
  return {
    update(message, done, total) {
      const now = Date.now();
      if (now - last < 80) return;
      last = now;
      const pct = done !== undefined && total ? ` ${Math.floor((done / total) * 100)}%` : '';
      draw(`${label}${pct} ${message}`);
    },
    done(message) {
      stream.write('\r\x1b[2K');
      if (message) stream.write(`${label} ${message}\n`);
    },
  };
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
