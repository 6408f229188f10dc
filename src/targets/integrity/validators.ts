/**
 * Checks of a superblock read from disk against the table (integrity.md §2.3
 * #13–#19), with Linux's texts. Kept apart from the logic that uses it.
 */
import { ctrError } from '../common/dev-offset.ts';
import { MAX_LOG2_INTERLEAVE, MIN_LOG2_INTERLEAVE } from './geometry.ts';
import { SB_FLAG_HAVE_JOURNAL_MAC, SB_VERSION_MAX, type Superblock } from './superblock.ts';

export function validateSuperblock(sb: Superblock, table: { tagSize: number; log2Spb: number; metaDevice: boolean }): void {
  if (sb.version === 0 || sb.version > SB_VERSION_MAX) throw ctrError('Unknown version');
  if (sb.tagSize !== table.tagSize) throw ctrError("Tag size doesn't match the information in superblock");
  if (sb.log2SectorsPerBlock !== table.log2Spb) throw ctrError("Block size doesn't match the information in superblock");
  if (sb.journalSections === 0) throw ctrError('Corrupted superblock, journal_sections is 0');
  const il = sb.log2InterleaveSectors;
  if (table.metaDevice ? il !== 0 : il < MIN_LOG2_INTERLEAVE || il > MAX_LOG2_INTERLEAVE) {
    throw ctrError('Invalid interleave_sectors in the superblock');
  }
  // dmkit refuses journal_mac tables (args.ts), so a volume formatted with one cannot be opened.
  if (sb.flags & SB_FLAG_HAVE_JOURNAL_MAC) throw ctrError('Journal mac mismatch');
}
