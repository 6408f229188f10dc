/**
 * replay-log's run_fsck: fsync the replay target, then hand the command to the
 * shell (system(3)); its output is passed through to ours. Exit status 0
 * passes, and so — as with WEXITSTATUS of a signalled child — does a command
 * killed by a signal. A failed fsync fails the check.
 */
import { spawn } from 'node:child_process';
import type { BlockDevice } from '../../block/device.ts';
import type { Output } from './options.ts';

export async function runFsck(target: BlockDevice, command: string, io: { stdout: Output; stderr: Output }): Promise<boolean> {
  try {
    await target.flush();
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk: Buffer) => io.stdout.write(chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => io.stderr.write(chunk.toString()));
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === null || code === 0));
  });
}
