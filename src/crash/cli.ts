/**
 * npm run crash -- [--module PATH] [--target T]... [--seed S | --soak MINUTES] [--ops N]
 *
 * Explores crash targets: by default dmkit's built-in stacks (targets.ts:
 * linear, striped, striped-3, linear+striped, delay-0, delay, stacked,
 * log-writes); with --module, those a module exports as `crashTargets` (a
 * record of name → CrashTarget; test/crash/toy-target.ts is one). With
 * --seed, one run of that seed, reproducibly; with --soak, random seeds until
 * the time is up, each failure saved as a reproducible case under
 * crash-cases/. Exits 1 if anything failed.
 */
import { randomInt } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { Rng } from '../sim/rng.ts';
import { type CrashTarget, type ExploreResult, explore, formatFailure } from './explorer.ts';
import { builtinCrashTargets, workloadFor } from './targets.ts';

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
  const source = values.module ?? 'the built-in targets';
  const all = values.module ? await moduleTargets(values.module) : builtinCrashTargets();
  if (!all || Object.keys(all).length === 0) return usage(`${source} exports no crashTargets`);
  const names = values.target ?? Object.keys(all);
  const unknown = names.find((n) => !all[n]);
  if (unknown) return usage(`no crash target ${unknown} in ${source} (has: ${Object.keys(all).join(', ')})`);
  const ops = Number(values.ops);
  const rerun = (name: string, seed: number) =>
    `npm run crash --${values.module ? ` --module ${values.module}` : ''} --target ${name} --seed ${seed} --ops ${ops}`;

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
  const totals = new Map(names.map((n) => [n, { runs: 0, states: 0, busy: 0, failures: 0 }]));
  const rng = new Rng(values.seed === undefined ? randomInt(2 ** 47) : Number(values.seed));
  while (performance.now() < until) {
    for (const name of names) {
      const seed = rng.seed();
      const r = await runOne(all[name]!, seed, ops);
      const t = totals.get(name)!;
      t.runs++;
      t.states += Object.values(r.checked).reduce((a, b) => a + b, 0);
      t.busy += r.elapsedMs;
      if (r.failure) {
        t.failures++;
        print(r);
        await saveCase(name, seed, ops, rerun(name, seed), r);
      }
    }
  }
  const sum = { runs: 0, states: 0, busy: 0, failures: 0 };
  for (const [name, t] of totals) {
    console.log(`soak: ${name}: ${summary(t)}`);
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += t[k];
  }
  console.log(`soak: ${summary(sum)}`);
  return sum.failures ? 1 : 0;
}

async function moduleTargets(path: string): Promise<Record<string, CrashTarget> | undefined> {
  return ((await import(pathToFileURL(resolve(path)).href)) as { crashTargets?: Record<string, CrashTarget> }).crashTargets;
}

/** One seed: a random workload sized to the target's top device, every family. */
async function runOne(target: CrashTarget, seed: number, ops: number): Promise<ExploreResult> {
  return explore(target, { seed, workload: await workloadFor(target, seed, ops) });
}

function summary(t: { runs: number; states: number; busy: number; failures: number }): string {
  const rate = t.busy > 0 ? Math.round((t.states / t.busy) * 1000) : 0;
  return `${t.runs} runs, ${t.states} crash states checked (${rate}/s), ${t.failures} failure(s)`;
}

function print(r: ExploreResult): void {
  const states = Object.entries(r.checked).map(([f, n]) => `${f} ${n}`).join(', ');
  console.log(`${r.target} seed ${r.seed}: ${r.failure ? 'FAILED' : 'ok'} (${states}; ${Math.round(r.elapsedMs)} ms)`);
  if (r.failure) console.log(formatFailure(r.failure));
}

async function saveCase(name: string, seed: number, ops: number, rerun: string, r: ExploreResult): Promise<void> {
  await mkdir('crash-cases', { recursive: true });
  const file = `crash-cases/${name.replace(/[^\w.+-]/g, '_')}-${seed}.json`;
  await writeFile(file, JSON.stringify({ target: name, seed, ops, rerun, failure: r.failure, report: formatFailure(r.failure!) }, null, 2) + '\n');
  console.log(`saved ${file}`);
}

function usage(why: string): number {
  console.error(`crash: ${why}\nusage: npm run crash -- [--module PATH] [--target T]... [--seed S | --soak MINUTES] [--ops N]`);
  return 2;
}

process.exitCode = await main();
