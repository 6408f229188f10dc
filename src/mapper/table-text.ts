/**
 * Table text as dmsetup reads it (basic-targets §2.2): one target a line,
 * `start length type params…`, blank lines and `#` comments ignored.
 */
import { IoError } from '../block/errors.ts';
import { parseTableNumber } from './args.ts';

export interface TableLine {
  /** 1-based line number in the text the user gave (comments count). */
  readonly line: number;
  readonly start: bigint;
  readonly length: bigint;
  readonly type: string;
  /** Everything after the type word, `#` comment cut off. */
  readonly params: string;
}

/** DM_MAX_TYPE_NAME is 16 including the NUL. */
const MAX_TYPE_NAME = 15;

/**
 * Parses table text. `text` may be one string with newlines or a list of
 * lines (each of which may itself hold newlines, as `--table` may).
 */
export function parseTableText(text: string | readonly string[]): TableLine[] {
  const lines = (typeof text === 'string' ? [text] : text).flatMap((t) => t.split('\n'));
  const out: TableLine[] = [];
  lines.forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.replace(/[ \t\r\v\f]+$/, '').replace(/^[ \t\r\v\f]+/, '');
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const m = /^(\S+)\s+(\S+)\s+(\S+)\s*(.*)$/s.exec(trimmed);
    const start = m ? parseTableNumber(m[1]!) : undefined;
    const length = m ? parseTableNumber(m[2]!) : undefined;
    if (!m || start === undefined || length === undefined) {
      throw new IoError('EINVAL', `line ${line}: invalid format: expected "<start> <length> <target> [<args>...]", got "${trimmed}"`);
    }
    const type = m[3]!;
    if (type.length > MAX_TYPE_NAME) {
      throw new IoError('EINVAL', `line ${line}: Target type name ${type} is too long.`);
    }
    const hash = m[4]!.indexOf('#');
    const params = hash < 0 ? m[4]! : m[4]!.slice(0, hash);
    out.push({ line, start, length, type, params });
  });
  return out;
}
