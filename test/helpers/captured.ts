/** What an in-process command (runReplayLog, thinDump, runCli …) printed, and its exit status. */
export interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

/** Where such a command writes its text. */
export interface TextOut {
  write(text: string): unknown;
}

/** Runs `command` with its stdout and stderr collected as text: `captured((io) => thinDump(argv, io))`. */
export async function captured(command: (io: { stdout: TextOut; stderr: TextOut }) => Promise<number>): Promise<Captured> {
  let stdout = '';
  let stderr = '';
  const code = await command({
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
  });
  return { code, stdout, stderr };
}
