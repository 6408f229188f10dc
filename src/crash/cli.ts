/**
 * npm run crash -- --module PATH [--target T] [--seed S | --soak MINUTES] [--ops N]
 *
 * Explores crash targets exported by a module as `crashTargets` (a record of
 * name → CrashTarget; test/crash/toy-target.ts is one). With --seed, one run
 * of that seed, reproducibly; with --soak, random seeds until the time is up,
 * each failure saved as a reproducible case under crash-cases/. Exits 1 if
 * anything failed.
 */
import { randomInt } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { SECTOR_SIZE } from '../block/device.ts';
import { Rng } from '../sim/rng.ts';
import { Scheduler } from '../sim/scheduler.ts';
import { SimulatedDisk } from '../sim/simulated-disk.ts';
import { SparseImage } from '../sim/sparse-image.ts';
import { type CrashTarget, type ExploreResult, explore, formatFailure } from './explorer.ts';
import { randomWorkload } from './workload.ts';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      module: { type: 'string' },
      target: { type: 'string', multiple: true },
      seed: { type: 'string' },
      soak: { type: 'string' },
      ops: { type: 'string', default: '32' },
    },
  });
  if (!values.module) return usage('--module PATH is required (a module exporting crashTargets)');
  const mod = (await import(pathToFileURL(resolve(values.module)).href)) as { crashTargets?: Record<string, CrashTarget> };
  const all = mod.crashTargets;
  if (!all || Object.keys(all).length === 0) return usage(`${values.module} exports no crashTargets`);
  const names = values.target ?? Object.keys(all);
  const unknown = names.find((n) => !all[n]);
  if (unknown) return usage(`no crash target ${unknown} in ${values.module} (has: ${Object.keys(all).join(', ')})`);
  const ops = Number(values.ops);

  if (values.soak === undefined) {
    const seed = values.seed === undefined ? randomInt(2 ** 47) : Number(values.seed);
    let failed = 0;
    for (const name of names) {
      const r = await runOne(all[name]!, seed, ops);
      print(r);
      if (r.failure) failed++;
    }
    return failed ? 1 : 0;
  }

  const until = performance.now() + Number(values.soak) * 60_000;
  let runs = 0;
  let states = 0;
  let busy = 0;
  let failures = 0;
  const rng = new Rng(values.seed === undefined ? randomInt(2 ** 47) : Number(values.seed));
  while (performance.now() < until) {
    for (const name of names) {
      const seed = rng.seed();
      const r = await runOne(all[name]!, seed, ops);
      runs++;
      states += Object.values(r.checked).reduce((a, b) => a + b, 0);
      busy += r.elapsedMs;
      if (r.failure) {
        failures++;
        print(r);
        await saveCase(name, seed, ops, r);
      }
    }
  }
  const rate = busy > 0 ? Math.round((states / busy) * 1000) : 0;
  console.log(`soak: ${runs} runs, ${states} crash states checked (${rate}/s), ${failures} failure(s)`);
  return failures ? 1 : 0;
}

/** One seed: a random workload sized to the target's top device, every family. */
async function runOne(target: CrashTarget, seed: number, ops: number): Promise<ExploreResult> {
  const geometry = await topGeometry(target);
  const workload = randomWorkload(new Rng(seed), { ...geometry, length: ops });
  return explore(target, { seed, workload });
}

async function topGeometry(target: CrashTarget) {
  const scheduler = new Scheduler({ seed: 0 });
  const disks = target.disks.map((spec) => new SimulatedDisk({
    name: spec.name, scheduler, image: spec.initial?.() ?? new SparseImage(spec.sectors), limits: spec.limits ?? {},
  }));
  const top = await target.open(disks, scheduler.clock);
  const g = {
    sectors: top.sectors,
    blockSectors: top.limits.logicalBlockSize / SECTOR_SIZE,
    discard: top.limits.discard,
    writeZeroes: top.limits.writeZeroes,
  };
  await top.close();
  return g;
}

function print(r: ExploreResult): void {
  const states = Object.entries(r.checked).map(([f, n]) => `${f} ${n}`).join(', ');
  console.log(`${r.target} seed ${r.seed}: ${r.failure ? 'FAILED' : 'ok'} (${states}; ${Math.round(r.elapsedMs)} ms)`);
  if (r.failure) console.log(formatFailure(r.failure));
}

async function saveCase(name: string, seed: number, ops: number, r: ExploreResult): Promise<void> {
  await mkdir('crash-cases', { recursive: true });
  const file = `crash-cases/${name}-${seed}.json`;
  const rerun = `npm run crash -- --module ${process.argv.slice(2)[process.argv.slice(2).indexOf('--module') + 1]} --target ${name} --seed ${seed} --ops ${ops}`;
  await writeFile(file, JSON.stringify({ target: name, seed, ops, rerun, failure: r.failure, report: formatFailure(r.failure!) }, null, 2) + '\n');
  console.log(`saved ${file}`);
}

function usage(why: string): number {
  console.error(`crash: ${why}\nusage: npm run crash -- --module PATH [--target T]... [--seed S | --soak MINUTES] [--ops N]`);
  return 2;
}

process.exitCode = await main();
