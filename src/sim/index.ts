export { Rng } from './rng.ts';
export { CHUNK_BYTES, CHUNK_SECTORS, SparseImage } from './sparse-image.ts';
export { type CrashSelection, DiskState, type KeptWrite, type PendingWrite, type WriteRequest } from './disk-state.ts';
export { type Fault, type FaultAction, type FaultOp, type FaultRule, FaultSet } from './faults.ts';
export { type ScheduledOp, Scheduler, type SchedulerOptions, VirtualClock, settle } from './scheduler.ts';
export { type DiskEvent, SimulatedDisk, type SimulatedDiskOptions } from './simulated-disk.ts';
