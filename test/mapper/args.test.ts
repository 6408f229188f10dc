import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  kstrtouint, parseDevT, parseSector, parseTableNumber, parseU32Wrapping, parseU64Big, splitArgs,
} from '../../src/mapper/args.ts';

test('splitArgs: white space runs separate, backslash escapes, trailing backslash kept', () => {
  assert.deepEqual(splitArgs('  a  b\tc\n'), ['a', 'b', 'c']);
  assert.deepEqual(splitArgs('a\\ b c'), ['a b', 'c']);
  assert.deepEqual(splitArgs('a\\\\b'), ['a\\b']);
  assert.deepEqual(splitArgs('end\\'), ['end\\']);
  assert.deepEqual(splitArgs('x\u00a0y'), ['x', 'y']);
  assert.deepEqual(splitArgs(''), []);
});

test('splitArgs: words without spaces or backslashes round-trip through join', () => {
  fc.assert(
    fc.property(fc.array(fc.stringMatching(/^[a-z0-9:/._-]{1,12}$/), { maxLength: 12 }), (words) => {
      assert.deepEqual(splitArgs(words.join(' ')), words);
    }),
  );
});

test('%llu%c: digits only, no sign, saturating', () => {
  assert.equal(parseU64Big('0'), 0n);
  assert.equal(parseU64Big('18446744073709551615'), 18446744073709551615n);
  assert.equal(parseU64Big('99999999999999999999999'), 18446744073709551615n);
  for (const bad of ['', '-1', '+1', '12k', '0x10', '5.0', ' 1']) assert.equal(parseU64Big(bad), undefined, bad);
  assert.equal(parseSector('2048'), 2048);
  assert.equal(parseSector('9007199254740993'), undefined);
});

test('%u%c truncates to 32 bits', () => {
  assert.equal(parseU32Wrapping('4294967295'), 4294967295);
  assert.equal(parseU32Wrapping('4294967296'), 0);
  assert.equal(parseU32Wrapping('4294967297'), 1);
  assert.equal(parseU32Wrapping('1a'), undefined);
});

test('kstrtouint: optional +, one trailing newline, range-checked', () => {
  assert.equal(kstrtouint('+7'), 7);
  assert.equal(kstrtouint('7\n'), 7);
  assert.equal(kstrtouint('4294967295'), 4294967295);
  for (const bad of ['4294967296', '-1', ' 7', '7 ', '', '+', '7\n\n']) assert.equal(kstrtouint(bad), undefined, JSON.stringify(bad));
});

test('table numbers as glibc strtoull reads them: sign accepted, negatives wrap', () => {
  assert.equal(parseTableNumber('-1'), 18446744073709551615n);
  assert.equal(parseTableNumber('+5'), 5n);
  assert.equal(parseTableNumber('1x'), undefined);
});

test('major:minor', () => {
  assert.deepEqual(parseDevT('7:0'), { major: 7, minor: 0 });
  assert.equal(parseDevT('/dev/loop0'), undefined);
  assert.equal(parseDevT('7:0:1'), undefined);
  assert.throws(() => parseDevT('4096:0'), { code: 'EOVERFLOW' });
  assert.throws(() => parseDevT('7:1048576'), { code: 'EOVERFLOW' });
});
