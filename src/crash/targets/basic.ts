/**
 * The basic stacks as crash targets: linear, striped, delay and a stack of
 * two mapped devices over small stale disks (CRASH-TESTING §2; basic-targets
 * §10.1), plus log-writes (log-writes.ts).
 */
import { LOG_WRITES } from './log-writes.ts';
import { type StackSpec, staleDisk } from './stack.ts';

/** Disk size of the small stacks: big enough for splits and several stripe rows, small enough to check thousands of states. */
const DISK = 72;

export const LINEAR: StackSpec = {
  name: 'linear',
  disks: [staleDisk('sda', DISK)],
  devices: [{ name: 'lin', table: ['0 64 linear /dev/sda 8'] }],
};

/** Two stripes on separate disks: a top FLUSH must reach both (R6; basic-targets §4.3, §10.1 rule 2). */
export const STRIPED_2: StackSpec = {
  name: 'striped',
  disks: [staleDisk('sda', DISK), staleDisk('sdb', DISK)],
  devices: [{ name: 'str', table: ['0 128 striped 2 4 /dev/sda 8 /dev/sdb 0'] }],
};

export const STRIPED_3: StackSpec = {
  name: 'striped-3',
  disks: [staleDisk('sda', DISK), staleDisk('sdb', DISK), staleDisk('sdc', DISK)],
  devices: [{ name: 'str3', table: ['0 96 striped 3 2 /dev/sda 0 /dev/sdb 8 /dev/sdc 4'] }],
};

/** Two targets in one table: requests crossing sector 32 are split, a FLUSH fans out to both (§4.2, §4.3). */
export const LINEAR_STRIPED: StackSpec = {
  name: 'linear+striped',
  disks: [staleDisk('sda', DISK), staleDisk('sdb', DISK), staleDisk('sdc', DISK)],
  devices: [{ name: 'mix', table: ['0 32 linear /dev/sda 16', '32 64 striped 2 4 /dev/sdb 0 /dev/sdc 8'] }],
};

export const DELAY_0: StackSpec = {
  name: 'delay-0',
  disks: [staleDisk('sda', DISK)],
  devices: [{ name: 'dly0', table: ['0 64 delay /dev/sda 8 0'] }],
};

/**
 * Reads, writes and flushes held for different times on the virtual clock
 * (the scheduler advances it when every disk is idle), so a flush can
 * overtake held writes: they were never acknowledged, so it need not cover them.
 */
export const DELAY: StackSpec = {
  name: 'delay',
  disks: [staleDisk('sda', DISK)],
  devices: [{ name: 'dly', table: ['0 64 delay /dev/sda 8 7 /dev/sda 8 13 /dev/sda 8 3'] }],
};

/** linear over striped over two disks, through /dev/mapper (R6 through two layers). */
export const STACKED: StackSpec = {
  name: 'stacked',
  disks: [staleDisk('sda', DISK), staleDisk('sdb', DISK)],
  devices: [
    { name: 'lower', table: ['0 128 striped 2 4 /dev/sda 8 /dev/sdb 0'] },
    { name: 'upper', table: ['0 96 linear /dev/mapper/lower 24'] },
  ],
};

export const BUILTIN_STACKS: readonly StackSpec[] = [LINEAR, STRIPED_2, STRIPED_3, LINEAR_STRIPED, DELAY_0, DELAY, STACKED, LOG_WRITES];
