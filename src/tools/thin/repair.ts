import { IoError } from '../../block/errors.ts';
import { FileDevice } from '../../block/file-device.ts';
import type { ToolIo } from './io.ts';
import { OVERRIDE_OPTIONS, inputOutputPaths, parseOverrides, runTool } from './options.ts';
import { MetadataRestorer, buildOrZero, openOutputMetadata } from './restore.ts';
import { dumpRepaired } from './salvage.ts';

const USAGE = `Usage: thin repair [options]
Options:
  {-h|--help}
  {-i|--input} <input metadata (binary format)>
  {-o|--output} <output metadata (binary format)>
  {--transaction-id} <natural>
  {--data-block-size} <natural>
  {--nr-data-blocks} <natural>
`;

/**
 * `dmkit thin repair -i OLD -o NEW` (thin_repair, spec/thin-metadata.md
 * §11.2): what `thin dump --repair` salvages from OLD, restored into fresh
 * metadata on NEW, in process. NEW must exist and be large enough, as for
 * restore; on failure its superblock is zeroed. The superblock's flags are
 * kept, NEEDS_CHECK included, as 0.9.0 keeps them: `thin check
 * --clear-needs-check-flag NEW` clears it once NEW checks clean.
 */
export function thinRepair(argv: readonly string[], io: ToolIo): Promise<number> {
  const spec = { flags: { input: true, output: true, ...OVERRIDE_OPTIONS }, aliases: { i: 'input', o: 'output' } };
  return runTool(argv, io, USAGE, spec, async ({ options, positional, closeAtEnd }) => {
    const { input: inputPath, output: outputPath } = inputOutputPaths(options);
    if (positional.length > 0) throw new IoError('EINVAL', `unexpected argument '${positional[0]}' (input and output are -i and -o)`);
    const overrides = parseOverrides(options);
    const output = closeAtEnd(await openOutputMetadata(outputPath));
    const input = closeAtEnd(await FileDevice.open(inputPath, { readOnly: true }));
    const restorer = new MetadataRestorer(output);
    await buildOrZero(output, async () => {
      try {
        await dumpRepaired(input, restorer, { overrides });
      } finally {
        await restorer.close();
      }
    });
    return 0;
  });
}
