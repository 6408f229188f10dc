/** Offline tools: they run in this process, without the daemon. */
import type { Command } from './command.ts';

export const replayLog: Command = {
  name: 'replay-log',
  usage: 'replay-log --log LOGFILE [--replay DEVICE] [options...]',
  summary: "replay a dm-log-writes log onto a file or device (fstests' replay-log; its own options)",
  options: {},
  args: { min: 0, max: Infinity },
  raw: true,
  async run(ctx) {
    // Loaded on use, so the daemon commands do not pay for the tool's modules at start-up.
    const { runReplayLog } = await import('../tools/replay-log/replay-log.ts');
    return runReplayLog([...ctx.args], { stdout: ctx.io.stdout, stderr: ctx.io.stderr });
  },
};
