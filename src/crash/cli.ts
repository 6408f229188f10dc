/**
 * npm run crash -- [--target T]... [--broken] [--module PATH] [--seed S | --soak MINUTES] [--ops N]
 *                  [--family F]... [--states N] [--ms MS] [--minimise-ms MS]
 *
 * Explores crash targets: by default dmkit's shipped targets (targets/index.ts:
 * the basic stacks, log-writes, thin, clone, mirror, integrity); --broken, or
 * naming one, runs the seed bugs of CRASH-TESTING §3 instead, which must
 * fail. With --module, the targets a module exports as `crashTargets` (a
 * record of name → CrashTarget; test/crash/toy-target.ts is one). With
 * --seed, one run of that seed, reproducibly; with --soak, random seeds until
 * the time is up, each failure saved as a reproducible case under
 * crash-cases/. Exits 1 if anything failed, 2 on bad usage.
 */
import { randomInt } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { Rng } from '../sim/rng.ts';
import { type Budget, type CrashTarget, DEFAULT_BUDGET, type ExploreOptions, type ExploreResult, explore, formatFailure } from './explorer.ts';
import { FAMILIES, type FamilyName } from './families.ts';
import { BROKEN_CRASH_TARGETS, CRASH_TARGETS, type CrashTargetBuilder, workloadFor } from './targets/index.ts';

const USAGE = `usage: npm run crash -- [--target T]... [--broken] [--module PATH] [--seed S | --soak MINUTES] [--ops N]
                        [--family F]... [--states N] [--ms MS] [--minimise-ms MS]
  --target T        explore target T (repeatable; default: every target listed below, or with --broken every broken variant)
  --broken          explore the deliberately broken variants (each must fail)
  --module PATH     explore the targets PATH exports as crashTargets instead
  --seed S          the seed of the run (with --soak: of the seed sequence); default random
  --soak MINUTES    random seeds until the time is up; failures are saved under crash-cases/
  --ops N           top-level operations per workload (default 32)
  --family F        crash-state family to explore (repeatable; default all: ${FAMILIES.join(', ')})
  --states N        states checked per family at most (default ${DEFAULT_BUDGET.states})
  --ms MS           wall-clock milliseconds per family at most (default ${DEFAULT_BUDGET.ms})
  --minimise-ms MS  time to shrink a failure's workload (default 10000; 0: do not shrink)`;

interface Catalogue {
  readonly source: string;
  readonly targets: Readonly<Record<string, CrashTargetBuilder>>;
  readonly broken: Readonly<Record<string, CrashTargetBuilder>>;
}

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      module: { type: 'string' },
      target: { type: 'string', multiple: true },
      broken: { type: 'boolean' },
      seed: { type: 'string' },
      soak: { type: 'string' },
      ops: { type: 'string', default: '32' },
      family: { type: 'string', multiple: true },
      states: { type: 'string' },
      ms: { type: 'string' },
      'minimise-ms': { type: 'string' },
    },
  });
  const catalogue = values.module ? await moduleCatalogue(values.module) : { source: 'the built-in targets', targets: CRASH_TARGETS, broken: BROKEN_CRASH_TARGETS };
  if (values.help) {
    console.log(`${USAGE}\n\n${listing(catalogue)}`);
    return 0;
  }
  const all = { ...catalogue.targets, ...catalogue.broken };
  if (Object.keys(all).length === 0) throw new UsageError(`${catalogue.source} exports no crashTargets`);
  const names = values.target ?? Object.keys(values.broken ? catalogue.broken : catalogue.targets);
  const unknown = names.find((n) => !all[n]);
  if (unknown) throw new UsageError(`no crash target ${unknown} in ${catalogue.source} (has: ${Object.keys(all).join(', ')})`);
  const families = (values.family ?? [...FAMILIES]).map((f) => {
    if (!(FAMILIES as readonly string[]).includes(f)) throw new UsageError(`--family ${f}: not a crash-state family (${FAMILIES.join(', ')})`);
    return f as FamilyName;
  });
  const ops = whole('--ops', values.ops);
  const budget: Budget = { states: whole('--states', values.states, DEFAULT_BUDGET.states), ms: whole('--ms', values.ms, DEFAULT_BUDGET.ms) };
  const minimiseMs = whole('--minimise-ms', values['minimise-ms'], 10_000);
  const seed = values.seed === undefined ? randomInt(2 ** 47) : whole('--seed', values.seed);
  const options: Omit<ExploreOptions, 'seed' | 'workload'> = { families, defaultBudget: budget, minimise: minimiseMs > 0, minimiseMs };
  /** What the rerun line of a report adds to seed, target, ops and family: the module, and the budgets given. */
  const rerunOptions = [
    values.module && ` --module ${values.module}`,
    values.states !== undefined && ` --states ${budget.states}`,
    values.ms !== undefined && ` --ms ${budget.ms}`,
    values['minimise-ms'] !== undefined && ` --minimise-ms ${minimiseMs}`,
  ].filter(Boolean).join('');

  const built = new Map<string, CrashTarget>();
  const target = async (name: string) => built.get(name) ?? built.set(name, await all[name]!()).get(name)!;
  const runOne = async (name: string, s: number) => {
    const t = await target(name);
    // The lint judges a run of concurrent requests only when the target says what its commits reference (lint.ts).
    return explore(t, { ...options, seed: s, workload: await workloadFor(t, s, ops), lint: t.references !== undefined });
  };

  if (values.soak === undefined) {
    let failed = 0;
    for (const name of names) {
      const r = await runOne(name, seed);
      print(r, rerunOptions);
      if (r.failure) failed++;
    }
    return failed ? 1 : 0;
  }

  const until = performance.now() + whole('--soak', values.soak) * 60_000;
  const totals = new Map(names.map((n) => [n, { runs: 0, states: 0, busy: 0, failures: 0 }]));
  const rng = new Rng(seed);
  while (performance.now() < until) {
    for (const name of names) {
      const s = rng.seed();
      const r = await runOne(name, s);
      const t = totals.get(name)!;
      t.runs++;
      t.states += Object.values(r.checked).reduce((a, b) => a + b, 0);
      t.busy += r.elapsedMs;
      if (r.failure) {
        t.failures++;
        print(r, rerunOptions);
        await saveCase(name, s, ops, r, rerunOptions);
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

async function moduleCatalogue(path: string): Promise<Catalogue> {
  const exported = ((await import(pathToFileURL(resolve(path)).href)) as { crashTargets?: Record<string, CrashTarget> }).crashTargets ?? {};
  return { source: path, targets: Object.fromEntries(Object.entries(exported).map(([n, t]) => [n, () => t])), broken: {} };
}

function listing(c: Catalogue): string {
  const broken = Object.keys(c.broken);
  return [
    `targets of ${c.source}:`, ...Object.keys(c.targets).map((n) => `  ${n}`),
    ...(broken.length ? ['deliberately broken variants (CRASH-TESTING §3; each must fail):', ...broken.map((n) => `  ${n}`)] : []),
  ].join('\n');
}

/** A non-negative whole number option, or `fallback` when it was not given. */
function whole(option: string, text: string | undefined, fallback?: number): number {
  if (text === undefined && fallback !== undefined) return fallback;
  const n = Number(text);
  if (text === undefined || text.trim() === '' || !Number.isSafeInteger(n) || n < 0) {
    throw new UsageError(`${option} ${text ?? ''}: not a whole number`);
  }
  return n;
}

function summary(t: { runs: number; states: number; busy: number; failures: number }): string {
  const rate = t.busy > 0 ? Math.round((t.states / t.busy) * 1000) : 0;
  return `${t.runs} runs, ${t.states} crash states checked (${rate}/s), ${t.failures} failure(s)`;
}

function print(r: ExploreResult, rerunOptions: string): void {
  const states = Object.entries(r.checked).map(([f, n]) => `${f} ${n}`).join(', ');
  console.log(`${r.target} seed ${r.seed}: ${r.failure ? 'FAILED' : 'ok'} (${states}; ${Math.round(r.elapsedMs)} ms)`);
  if (r.failure) console.log(formatFailure(r.failure, rerunOptions));
}

async function saveCase(name: string, seed: number, ops: number, r: ExploreResult, rerunOptions: string): Promise<void> {
  await mkdir('crash-cases', { recursive: true });
  const file = `crash-cases/${name.replace(/[^\w.+-]/g, '_')}-${seed}.json`;
  const report = formatFailure(r.failure!, rerunOptions);
  const rerun = report.slice(report.indexOf('npm run crash'));
  await writeFile(file, JSON.stringify({ target: name, seed, ops, rerun, failure: r.failure, report }, null, 2) + '\n');
  console.log(`saved ${file}`);
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  // parseArgs rejects unknown options and missing values with a TypeError carrying an ERR_PARSE_ARGS_* code.
  const parse = err instanceof TypeError && String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS');
  if (!(err instanceof UsageError) && !parse) throw err;
  console.error(`crash: ${(err as Error).message}\n${USAGE}`);
  process.exitCode = 2;
}
