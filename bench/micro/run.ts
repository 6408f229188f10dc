/**
 * Runs every micro-benchmark in this folder, one child process each (so one
 * cannot warm up or disturb another), in name order.
 *
 *   node --import tsx bench/micro/run.ts [NAME-SUBSTRING]
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';

const here = import.meta.dirname;
const filter = process.argv[2];
const files = readdirSync(here)
  .filter((f) => f.endsWith('.ts') && f !== basename(import.meta.filename))
  .filter((f) => !filter || f.includes(filter))
  .sort();

let failed = 0;
for (const f of files) {
  console.log(`\n=== bench/micro/${f}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, f)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`bench/micro/${f} failed (exit ${r.status ?? r.signal})`);
    failed++;
  }
}
process.exitCode = failed > 0 ? 1 : 0;
