/**
 * Files for the tests of one file: a temporary directory, made at once and
 * removed, with everything in it, by an `after` hook.
 *
 *   const dir = tempDir('dmkit-thin-');
 *   it('…', async () => { const meta = await blankFile(join(dir, 'meta.img'), 16 * MiB); … });
 *
 * Made synchronously, not in a `before` hook: node:test starts a file's
 * top-level `before` hooks side by side, so another one could not rely on
 * it. `after` hooks run one by one in the order they were registered: a
 * file that must stop something working in the directory (a daemon, a
 * server) registers that hook before it calls tempDir.
 */
import { mkdtempSync } from 'node:fs';
import { rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

/** A fresh directory named `prefix…` under the system's temporary directory, removed after the file's tests. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** An empty (sparse) file of `bytes` at `path`, replacing any file there; returns the path. */
export async function blankFile(path: string, bytes: number): Promise<string> {
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}
