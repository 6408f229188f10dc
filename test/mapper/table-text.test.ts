import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseTableText } from '../../src/mapper/table-text.ts';

test('comments, blank lines and trailing white space are ignored; line numbers count every line', () => {
  const lines = parseTableText('# header\n\n0 1024 linear /dev/loop0 0   \n  1024 1024 zero # the rest\n');
  assert.deepEqual(
    lines.map((l) => [l.line, l.start, l.length, l.type, l.params]),
    [
      [3, 0n, 1024n, 'linear', '/dev/loop0 0'],
      [4, 1024n, 1024n, 'zero', ''],
    ],
  );
});

test('a list of lines may itself hold newlines, as --table may', () => {
  assert.equal(parseTableText(['0 8 zero\n8 8 zero', '16 8 error']).length, 3);
});

test('fewer than three fields is an invalid format naming the line', () => {
  assert.throws(() => parseTableText('0 8 zero\ngarbage'), { code: 'EINVAL', message: /^line 2: invalid format/ });
  assert.throws(() => parseTableText('0 x zero'), { code: 'EINVAL', message: /^line 1: invalid format/ });
});

test('a target type name of 16 or more characters is refused', () => {
  assert.throws(() => parseTableText('0 8 abcdefghijklmnop'), { message: 'line 1: Target type name abcdefghijklmnop is too long.' });
  assert.equal(parseTableText('0 8 abcdefghijklmno')[0]!.type, 'abcdefghijklmno');
});

test('property: any well-formed table text parses back to its lines', () => {
  const line = fc.record({
    start: fc.bigInt({ min: 0n, max: 1n << 40n }),
    length: fc.bigInt({ min: 1n, max: 1n << 30n }),
    type: fc.stringMatching(/^[a-z][a-z-]{0,14}$/),
    params: fc.array(fc.stringMatching(/^[a-z0-9:/._]{1,8}$/), { maxLength: 6 }).map((w) => w.join(' ')),
  });
  fc.assert(
    fc.property(fc.array(line, { maxLength: 8 }), fc.array(fc.constantFrom('', '# c', '   '), { maxLength: 3 }), (ls, noise) => {
      const text = [...noise, ...ls.map((l) => `${l.start} ${l.length} ${l.type} ${l.params}`)].join('\n');
      const parsed = parseTableText(text);
      assert.deepEqual(
        parsed.map((p) => ({ start: p.start, length: p.length, type: p.type, params: p.params })),
        ls.map((l) => ({ ...l })),
      );
    }),
  );
});
