/**
 * Relative paths in table lines. Linux looks a device path up in the context
 * of the process that loads the table, so a relative path means "relative to
 * where the user is": the CLI resolves against its working directory, a
 * config file against its own directory, before the daemon (whose working
 * directory is elsewhere) sees the line.
 *
 * Which arguments are paths only the target knows, so a word is taken for a
 * relative path when it starts with `./` or `../`, or when a file or block
 * device of that name exists in the base directory. Numbers, `major:minor`,
 * URIs, absolute paths and words with backslash escapes stay as they are.
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';

/** Makes the relative file arguments of one table line absolute against `baseDir`. */
export async function resolveTablePaths(line: string, baseDir: string): Promise<string> {
  const head = /^(\s*\S+\s+\S+\s+\S+)(.*)$/s.exec(line);
  if (!head || /^\s*#/.test(line)) return line;
  const [, prefix, params] = head as unknown as [string, string, string];
  const comment = params.indexOf('#');
  const args = comment < 0 ? params : params.slice(0, comment);
  const rest = comment < 0 ? '' : params.slice(comment);
  const parts = args.split(/(\s+)/);
  const resolved = await Promise.all(parts.map((word) => resolveWord(word, baseDir)));
  return prefix + resolved.join('') + rest;
}

async function resolveWord(word: string, baseDir: string): Promise<string> {
  if (word === '' || /\s/.test(word) || isAbsolute(word) || word.includes('\\')) return word;
  if (/^\d+$/.test(word) || /^\d+:\d+$/.test(word) || /^[a-z][a-z0-9+.-]*:\/\//i.test(word)) return word;
  const candidate = resolve(baseDir, word);
  if (word.startsWith('./') || word.startsWith('../')) return candidate;
  const st = await stat(candidate).catch(() => undefined);
  return st && (st.isFile() || st.isBlockDevice()) ? candidate : word;
}
