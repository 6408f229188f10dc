/**
 * mirror through the mapper: the BlockDevice conformance suite, flakey under
 * one leg (errors and dropped writes), and a property test of random writes,
 * leg failures and resync against a model: once the faults are gone and the
 * resync has finished, every leg equals the model byte for byte.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';

import { SECTOR_SIZE } from '../../src/block/device.ts';
import { IoError } from '../../src/block/errors.ts';
import { DeviceRegistry } from '../../src/mapper/device-registry.ts';
import { TargetRegistry } from '../../src/mapper/target-registry.ts';
import type { TargetType } from '../../src/mapper/target.ts';
import type { Fault } from '../../src/sim/faults.ts';
import { Scheduler } from '../../src/sim/scheduler.ts';
import { SimulatedDisk } from '../../src/sim/simulated-disk.ts';
import { flakeyTarget } from '../../src/targets/flakey/flakey.ts';
import { linearTarget } from '../../src/targets/linear/linear.ts';
import { mirrorTarget } from '../../src/targets/mirror/mirror.ts';
import { blockDeviceConformance } from '../helpers/conformance.ts';
import { memoryRegistry } from '../helpers/registry.ts';
import { syncProgress, until } from './mirror-helpers.ts';

const TYPES: TargetType[] = [mirrorTarget, flakeyTarget, linearTarget];

function mapped(table: string[], disks: Record<string, number>) {
  return async () => {
    const { registry } = memoryRegistry(TYPES, disks);
    await registry.create('dev', { table });
    return { dev: registry.open('dev'), cleanup: () => registry.shutdown() };
  };
}

const LEGS = { '/dev/loop0': 16, '/dev/loop1': 16384, '/dev/loop2': 16384, '/dev/loop3': 16384 };
blockDeviceConformance('mirror, core nosync', mapped(['0 8192 mirror core 2 64 nosync 2 /dev/loop1 0 /dev/loop2 100'], LEGS));
blockDeviceConformance('mirror, disk log resyncing, 3 legs', mapped(['0 8192 mirror disk 2 /dev/loop0 128 3 /dev/loop1 0 /dev/loop2 0 /dev/loop3 8000 1 handle_errors'], LEGS));

function mirrorStatus(registry: DeviceRegistry, name = 'm'): string {
  return registry.status(name, { type: 'info' })[0]!.params;
}

describe('flakey under one leg', () => {
  async function stack(flakeyFeatures: string, mirrorFeatures: string) {
    const { registry, disks } = memoryRegistry(TYPES, { '/dev/loop0': 16, '/dev/loop1': 8192, '/dev/loop2': 8192 });
    await registry.create('fl', { table: [`0 8192 flakey /dev/loop2 0 0 1 ${flakeyFeatures}`] });
    // Created before its table goes live, so events() counts every event of the live table,
    // those of the resume's first worker pass included.
    await registry.create('m');
    await registry.load('m', [`0 8192 mirror disk 3 /dev/loop0 64 nosync 2 /dev/loop1 0 /dev/mapper/fl 0${mirrorFeatures}`]);
    await registry.resume('m');
    return { registry, disks, dev: registry.open('m'), events: () => registry.info('m').eventNr };
  }

  it('write errors: the leg is failed (D, then F: flakey fails its flushes too), events are raised, data stays correct', async () => {
    const { registry, dev, events, disks } = await stack('1 error_writes', ' 2 handle_errors keep_log');
    const data = Buffer.alloc(8 * SECTOR_SIZE, 0x42);
    await dev.write(64, data);
    // The write failed on the leg (D, one event); a log flush flushes the legs first and flakey
    // fails that too (F, another event — the resume's pass may get there before the write),
    // and F outranks D.
    await until(() => mirrorStatus(registry).includes(' AF '), 'the leg flush failure');
    assert.equal(mirrorStatus(registry), '2 7:1 253:0 127/128 1 AF 3 disk 7:0 A');
    assert.equal(events(), 2);
    const back = Buffer.alloc(data.length);
    await dev.read(64, back);
    assert.deepEqual(back, data);
    const leg0 = Buffer.alloc(data.length);
    await disks['/dev/loop1']!.read(64, leg0);
    assert.deepEqual(leg0, data);
    await dev.close();
    await registry.shutdown();
  });

  it('dropped writes are invisible to the mirror; reads come from the primary and stay correct', async () => {
    const { registry, dev, disks } = await stack('1 drop_writes', ' 1 handle_errors');
    const data = Buffer.alloc(8 * SECTOR_SIZE, 0x43);
    await dev.write(128, data);
    await dev.flush();
    const back = Buffer.alloc(data.length);
    await dev.read(128, back);
    assert.deepEqual(back, data);
    assert.equal(mirrorStatus(registry), '2 7:1 253:0 128/128 1 AA 3 disk 7:0 A');
    const lost = Buffer.alloc(data.length);
    await disks['/dev/loop2']!.read(128, lost);
    assert.deepEqual(lost, Buffer.alloc(data.length), 'flakey dropped the leg write');
    await dev.close();
    await registry.shutdown();
  });

  it('read errors on the primary: retried on the other leg, status R, later reads keep working', async () => {
    const { registry, disks } = memoryRegistry(TYPES, { '/dev/loop0': 16, '/dev/loop1': 8192, '/dev/loop2': 8192 });
    await disks['/dev/loop1']!.write(0, Buffer.alloc(8192 * SECTOR_SIZE, 0x33));
    await disks['/dev/loop2']!.write(0, Buffer.alloc(8192 * SECTOR_SIZE, 0x33));
    await registry.create('fl', { table: ['0 8192 flakey /dev/loop1 0 0 1 1 error_reads'] });
    await registry.create('m', { table: ['0 8192 mirror disk 3 /dev/loop0 64 nosync 2 /dev/mapper/fl 0 /dev/loop2 0 1 handle_errors'] });
    const dev = registry.open('m');
    const back = Buffer.alloc(4096);
    await dev.read(0, back);
    assert.ok(back.every((b) => b === 0x33));
    await dev.read(4096, back);
    assert.equal(mirrorStatus(registry), '2 253:0 7:2 128/128 1 RA 3 disk 7:0 A');
    await dev.close();
    await registry.shutdown();
  });
});

// ---- the property ----------------------------------------------------------

const SIZE = 512; // sectors
const REGION = 32; // 16 regions

type Op =
  | { op: 'write'; sector: number; count: number; byte: number }
  | { op: 'fail'; leg: number }
  | { op: 'heal' }
  | { op: 'settle'; ms: number }
  | { op: 'cycle' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), sector: fc.integer({ min: 0, max: SIZE - 1 }), count: fc.integer({ min: 1, max: 40 }), byte: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('fail' as const), leg: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'heal' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('settle' as const), ms: fc.integer({ min: 0, max: 50 }) }) },
  { weight: 1, arbitrary: fc.constant({ op: 'cycle' as const }) },
);

describe('mirror against a model (property)', () => {
  it('after the faults are gone and resync finished, every leg equals the model', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 1 << 30 }), fc.array(opArb, { minLength: 1, maxLength: 25 }), async (seed, ops) => {
      const scheduler = new Scheduler({ seed });
      const targets = new TargetRegistry();
      targets.register(mirrorTarget);
      const registry = new DeviceRegistry({ targets, clock: scheduler.clock, openFile: async (p) => {
        throw new IoError('ENOENT', p);
      } });
      const sims = ['log', 'leg0', 'leg1', 'leg2'].map((name) => new SimulatedDisk({ name, sectors: name === 'log' ? 8 : SIZE, scheduler }));
      sims.forEach((d, i) => registry.attach(`/d${i}`, d));
      // Legs start different: the initial resync must make them equal.
      await sims[2]!.write(0, Buffer.alloc(SIZE * SECTOR_SIZE, 0xee));
      const table = [`0 ${SIZE} mirror disk 2 /d0 ${REGION} 3 /d1 0 /d2 0 /d3 0 2 handle_errors keep_log`];
      await registry.create('m', { table });
      let dev = registry.open('m');
      const model = Buffer.alloc(SIZE * SECTOR_SIZE);
      const faults: Fault[] = [];
      for (const o of ops) {
        if (o.op === 'write') {
          const count = Math.min(o.count, SIZE - o.sector);
          const data = Buffer.alloc(count * SECTOR_SIZE, o.byte);
          await dev.write(o.sector, data);
          data.copy(model, o.sector * SECTOR_SIZE);
        } else if (o.op === 'fail') {
          faults.push(sims[o.leg + 1]!.addFault({ op: 'write', action: 'fail', sticky: true }));
        } else if (o.op === 'heal') {
          for (const f of faults.splice(0)) f.remove();
        } else if (o.op === 'settle') {
          await scheduler.clock.sleep(o.ms);
        } else {
          // A restart: everything goes through the on-disk log.
          await dev.close();
          await registry.remove('m');
          await registry.create('m', { table });
          dev = registry.open('m');
        }
        const back = Buffer.alloc(model.length);
        await dev.read(0, back);
        assert.ok(back.equals(model), `read-back differs from the model after ${JSON.stringify(o)}`);
      }
      for (const f of faults.splice(0)) f.remove();
      // The table is reloaded, as userspace does after a leg failure: out-of-sync regions resync.
      await dev.close();
      await registry.remove('m');
      await registry.create('m', { table });
      await until(() => { const p = syncProgress(mirrorStatus(registry)); return p.inSync === p.total; }, 'resync');
      await registry.suspend('m');
      for (const leg of sims.slice(1)) {
        const got = Buffer.alloc(model.length);
        await leg.read(0, got);
        assert.ok(got.equals(model), `${leg.name} differs from the model`);
      }
      await registry.shutdown();
    }), { numRuns: 25 });
  });
});


