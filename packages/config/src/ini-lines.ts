import ini from 'ini';
import { UserError } from '@mkinitrd-pkg/common';

/**
 * How a piece of a config file is shown in an error: at most 80 characters, control
 * characters escaped (JSON), so a hostile 10 MB line or an escape sequence cannot flood
 * or drive the terminal.
 */
export function shown(text: string, max = 80): string {
  // JSON escapes C0 controls; C1 controls (U+0080–U+009F, e.g. CSI U+009B) drive some terminals too.
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text).replace(/[\u0080-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** One `Key=Value` assignment with where it came from, for file:line errors. */
export interface Assignment {
  section: string;
  key: string;
  value: string;
  file: string;
  line: number;
  /** Set when the value came from this command-line flag (errors name it and are usage errors). */
  flag?: string;
}

/**
 * Read an INI file line by line. We need what `ini.decode` does not give: the line of
 * every assignment (errors name file:line) and repeated keys kept in order (mkosi-style
 * lists accumulate, and an empty assignment resets a list). Values are unquoted and
 * unescaped by `ini.unsafe`, so quoting rules are those of the `ini` package.
 */
export function parseIniAssignments(text: string, file: string): Assignment[] {
  const assignments: Assignment[] = [];
  let section = '';
  let previous: Assignment | undefined;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const line = raw.trim();
    const lineNo = i + 1;
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    // An indented line continues the previous value (systemd/mkosi style lists).
    if (/^\s/.test(raw) && previous) {
      previous.value = previous.value === '' ? line : `${previous.value}\n${line}`;
      continue;
    }
    previous = undefined;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      section = header[1]!.trim();
      if (!/^[A-Za-z][A-Za-z0-9]*$/.test(section)) throw new UserError('CONFIG', `${file}:${lineNo}: invalid section name ${shown(section)}`);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) {
      throw new UserError('CONFIG', `${file}:${lineNo}: expected "Key=Value" or "[Section]", got: ${shown(line)}`);
    }
    if (section === '') {
      throw new UserError('CONFIG', `${file}:${lineNo}: assignment outside of a [Section]: ${shown(line)}`);
    }
    const key = line.slice(0, eq).trim();
    const value = ini.unsafe(line.slice(eq + 1).trim());
    if (!/^[A-Za-z][A-Za-z0-9]*$/.test(key)) {
      throw new UserError('CONFIG', `${file}:${lineNo}: invalid key name ${shown(key)}`);
    }
    previous = { section, key, value: String(value), file, line: lineNo };
    assignments.push(previous);
  }
  return assignments;
}
