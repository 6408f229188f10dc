/**
 * A file system that can lose power after any call: the POSIX power-loss
 * model ARCHITECTURE §1 implies for files, as the crash test of a file
 * commit (state.json) needs it.
 *
 * - File data written but not fsynced may be lost or partly kept: after a
 *   crash the file holds its last fsynced data, or the new data torn at any
 *   byte, its size on disk either the torn length or the full length with
 *   the rest zeroes (ext4 delayed allocation can leave a file of the right
 *   size full of zeroes). Files here are written from the start after
 *   creation or truncation, so old and new bytes never mix.
 * - An fsynced file's data survives (its name does not, by that fsync alone).
 * - Directory changes (a new name, a rename) are ordered among themselves and
 *   durable once the directory is fsynced; before that, any prefix of them
 *   survives.
 *
 * One directory holds every file. Each call records a CrashPoint: what power
 * loss right after it could leave.
 */
import { dirname } from 'node:path';
import { IoError } from '../../src/block/errors.ts';
import type { StateFileHandle, StateFileSystem } from '../../src/daemon/state.ts';

interface Inode {
  /** What survives power loss. */
  readonly durable: Buffer;
  /** What reads return. */
  readonly current: Buffer;
}

type DirectoryChange =
  | { readonly kind: 'link'; readonly name: string; readonly inode: number }
  | { readonly kind: 'rename'; readonly from: string; readonly to: string };

/** One thing a file may be after power loss: its content (undefined: the name is gone) and how it came to be. */
export interface CrashOutcome {
  readonly content: Buffer | undefined;
  readonly how: string;
}

/** The file system as it stood after a call: its durable part and what may or may not have reached the disk. */
export class CrashPoint {
  constructor(
    /** How many calls were made before power was lost. */
    readonly calls: number,
    /** The last of them, for reports. */
    readonly call: string,
    private readonly durableNames: ReadonlyMap<string, number>,
    private readonly pendingChanges: readonly DirectoryChange[],
    private readonly inodes: ReadonlyMap<number, Inode>,
  ) {}

  /** Every content `path` may have once power is lost here, each distinct content once. */
  outcomes(path: string): CrashOutcome[] {
    const seen = new Map<string, CrashOutcome>();
    for (let kept = 0; kept <= this.pendingChanges.length; kept++) {
      const names = new Map(this.durableNames);
      for (const change of this.pendingChanges.slice(0, kept)) applyChange(names, change);
      const changes = `${kept} of ${this.pendingChanges.length} directory changes kept`;
      const inode = names.get(path);
      if (inode === undefined) {
        seen.set('none', seen.get('none') ?? { content: undefined, how: `${changes}, no file` });
        continue;
      }
      for (const data of dataAfterCrash(this.inodes.get(inode)!)) {
        const key = data.content.toString('hex');
        if (!seen.has(key)) seen.set(key, { content: data.content, how: `${changes}, ${data.how}` });
      }
    }
    return [...seen.values()];
  }
}

/** What an inode's data may be after power loss. */
function dataAfterCrash({ durable, current }: Inode): { content: Buffer; how: string }[] {
  if (durable.equals(current)) return [{ content: current, how: 'data as fsynced' }];
  const outcomes = [{ content: durable, how: 'unsynced data lost' }];
  for (let kept = 0; kept <= current.length; kept++) {
    const prefix = current.subarray(0, kept);
    outcomes.push({ content: prefix, how: `unsynced data torn at byte ${kept}` });
    outcomes.push({ content: Buffer.concat([prefix, Buffer.alloc(current.length - kept)]), how: `unsynced data torn at byte ${kept}, zeroes to its size ${current.length}` });
  }
  return outcomes;
}

function applyChange(names: Map<string, number>, change: DirectoryChange): void {
  if (change.kind === 'link') {
    names.set(change.name, change.inode);
  } else {
    names.set(change.to, names.get(change.from)!);
    names.delete(change.from);
  }
}

export class SimulatedFileSystem implements StateFileSystem {
  private readonly names = new Map<string, number>();
  private durableNames = new Map<string, number>();
  private pendingChanges: DirectoryChange[] = [];
  private readonly inodes = new Map<number, Inode>();
  /** Power loss before the first call, then after each call. */
  readonly crashPoints: CrashPoint[] = [];
  /**
   * Called after each call is recorded, as a microtask (never inside the
   * caller's synchronous step, as with real I/O): a test's way to act in the
   * middle of a sequence of calls.
   */
  afterCall: ((call: string) => void) | undefined;

  constructor(readonly directory: string) {
    this.crashPoints.push(this.crashPoint('none'));
  }

  /** How many calls have been made. */
  get calls(): number {
    return this.crashPoints.length - 1;
  }

  /** A file system after a restart, holding `files` (path → content) durably. */
  static restarted(directory: string, files: ReadonlyMap<string, Buffer>): SimulatedFileSystem {
    const fs = new SimulatedFileSystem(directory);
    for (const [path, content] of files) {
      const inode = fs.inodes.size;
      fs.inodes.set(inode, { durable: content, current: content });
      fs.names.set(path, inode);
      fs.durableNames.set(path, inode);
    }
    return fs;
  }

  async open(path: string, flags: 'w' | 'r'): Promise<StateFileHandle> {
    if (flags === 'r') {
      if (path !== this.directory) throw new IoError('EINVAL', `${path}: the simulated file system opens only its directory for reading`);
      return this.directoryHandle();
    }
    this.inDirectory(path);
    let inode = this.names.get(path);
    if (inode === undefined) {
      inode = this.inodes.size;
      this.inodes.set(inode, { durable: Buffer.alloc(0), current: Buffer.alloc(0) });
      this.names.set(path, inode);
      this.pendingChanges.push({ kind: 'link', name: path, inode });
      this.record(`create ${path}`);
    } else {
      this.update(inode, { current: Buffer.alloc(0) });
      this.record(`truncate ${path}`);
    }
    return this.fileHandle(path, inode);
  }

  async rename(from: string, to: string): Promise<void> {
    this.inDirectory(to);
    const inode = this.names.get(from);
    if (inode === undefined) throw new IoError('ENOENT', `${from}: no such file`);
    const change: DirectoryChange = { kind: 'rename', from, to };
    applyChange(this.names, change);
    this.pendingChanges.push(change);
    this.record(`rename ${from} → ${to}`);
  }

  async readFile(path: string): Promise<string> {
    const inode = this.names.get(path);
    if (inode === undefined) throw new IoError('ENOENT', `${path}: no such file`);
    return this.inodes.get(inode)!.current.toString('utf8');
  }

  private fileHandle(path: string, inode: number): StateFileHandle {
    let position = 0;
    return {
      writeFile: async (text) => {
        const data = Buffer.from(text, 'utf8');
        const { current } = this.inodes.get(inode)!;
        this.update(inode, { current: Buffer.concat([current.subarray(0, position), data, current.subarray(position + data.length)]) });
        position += data.length;
        this.record(`write ${data.length} bytes to ${path}`);
      },
      sync: async () => {
        this.update(inode, { durable: this.inodes.get(inode)!.current });
        this.record(`fsync ${path}`);
      },
      close: async () => this.record(`close ${path}`),
    };
  }

  private directoryHandle(): StateFileHandle {
    return {
      writeFile: async () => {
        throw new IoError('EINVAL', `${this.directory}: is a directory`);
      },
      sync: async () => {
        for (const change of this.pendingChanges) applyChange(this.durableNames, change);
        this.pendingChanges = [];
        this.record(`fsync ${this.directory}`);
      },
      close: async () => this.record(`close ${this.directory}`),
    };
  }

  private inDirectory(path: string): void {
    if (dirname(path) !== this.directory) throw new IoError('ENOENT', `${path}: not in the simulated directory ${this.directory}`);
  }

  private update(inode: number, change: Partial<Inode>): void {
    this.inodes.set(inode, { ...this.inodes.get(inode)!, ...change });
  }

  private crashPoint(call: string): CrashPoint {
    return new CrashPoint(this.crashPoints.length, call, new Map(this.durableNames), [...this.pendingChanges], new Map(this.inodes));
  }

  private record(call: string): void {
    this.crashPoints.push(this.crashPoint(call));
    const afterCall = this.afterCall;
    if (afterCall) queueMicrotask(() => afterCall(call));
  }
}
