/** Offline tools: they run in this process, without the daemon. */
import { type Command, usageError } from './command.ts';

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

const THIN_TOOLS = ['dump', 'restore', 'check', 'repair'] as const;

/** `dmkit thin dump|restore|check|repair ARGS…`: thin_dump, thin_restore, thin_check, thin_repair with their own options. */
export const thin: Command = {
  name: 'thin',
  usage: 'thin dump|restore|check|repair [options...] [METADATA]',
  summary: "thin-pool metadata tools (thin_dump, thin_restore, thin_check, thin_repair; their own options)",
  options: {},
  args: { min: 1, max: Infinity },
  raw: true,
  async run(ctx) {
    const [tool, ...argv] = ctx.args;
    if (!THIN_TOOLS.includes(tool as (typeof THIN_TOOLS)[number])) {
      throw usageError(thin, tool === undefined ? 'missing tool' : `unknown tool "${tool}"`);
    }
    const io = { stdout: ctx.io.stdout, stderr: ctx.io.stderr };
    if (tool === 'dump') return (await import('../tools/thin/dump.ts')).thinDump(argv, io);
    if (tool === 'restore') return (await import('../tools/thin/restore.ts')).thinRestore(argv, io);
    if (tool === 'repair') return (await import('../tools/thin/repair.ts')).thinRepair(argv, io);
    return (await import('../tools/thin/check.ts')).thinCheck(argv, io);
  },
};
