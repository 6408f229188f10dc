export * from './device.ts';
export * from './errors.ts';
export { MemoryDevice, type MemoryDeviceOptions } from './memory-device.ts';
export { FileDevice, type FileDeviceOptions } from './file-device.ts';
export { ChunkCursor, checkChunks, chunksLength, joinChunks, writeChunks } from './vectored.ts';
