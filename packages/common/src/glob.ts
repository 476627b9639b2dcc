/**
 * Shell-style globs compiled to regular expressions once (used by kmod patterns and pruner rules).
 *
 * - `*` matches any run of characters except `/` (within one path component);
 * - `?` matches one character except `/`;
 * - `[abc]`, `[a-z]`, `[!abc]` / `[^abc]` match one character of (not of) a set, never `/`;
 * - `**` matches across `/`: `a/**` matches `a` itself and everything below it, `**\/b` matches `b` at
 *   any depth (including the top), `a/**\/b` matches `a/b`, `a/x/b`, `a/x/y/b`.
 * Everything else is literal. The whole string must match.
 */

const GLOB_CHARS = /[*?[]/;

export function hasGlob(pattern: string): boolean {
  return GLOB_CHARS.test(pattern);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The regular-expression source (no anchors) for one glob. */
export function globToRegExpSource(glob: string): string {
  let out = '';
  let i = 0;
  while (i < glob.length) {
    const c = glob[i]!;
    if (c === '*') {
      let j = i;
      while (glob[j] === '*') j++;
      const stars = j - i;
      const atStart = i === 0 || glob[i - 1] === '/';
      if (stars >= 2 && atStart && glob[j] === '/') {
        // `**/`: zero or more whole directories.
        out += '(?:[^/]*/)*';
        i = j + 1;
        continue;
      }
      if (stars >= 2 && atStart && j === glob.length && i > 0) {
        // trailing `/**`: the directory itself and everything below it: `dir(?:/.*)?`.
        out = out.slice(0, -1) + '(?:/.*)?';
        i = j;
        continue;
      }
      out += stars >= 2 ? '.*' : '[^/]*';
      i = j;
      continue;
    }
    if (c === '?') {
      out += '[^/]';
      i++;
      continue;
    }
    if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close !== -1) {
        let body = glob.slice(i + 1, close);
        let negate = false;
        if (body.startsWith('!') || body.startsWith('^')) {
          negate = true;
          body = body.slice(1);
        }
        const cls = body.replace(/[\\\]^]/g, '\\$&');
        out += negate ? `(?!/)[^${cls}]` : `[${cls}]`;
        i = close + 1;
        continue;
      }
      out += '\\[';
      i++;
      continue;
    }
    out += escapeRegExp(c);
    i++;
  }
  return out;
}

export function globToRegExp(glob: string): RegExp {
  return new RegExp(`^(?:${globToRegExpSource(glob)})$`);
}
