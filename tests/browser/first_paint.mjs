// First paint of the map in headless Chromium: time from navigation until
// the map holds the expected nodes and sigma's WebGL layers have painted
// them. For docs/benchmarks.md (not a test: timings are measured, never
// asserted).
//
//   node tests/browser/first_paint.mjs <baseURL> <expectedNodes> [runs=5]
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, expected, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 5);
const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const times = [];
for (let i = 0; i < runs; i++) {
  const profile = mkdtempSync(join(tmpdir(), 'trawl-paint-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args,
    viewport: { width: 1440, height: 900 },
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const start = Date.now();
  await page.goto(`${base}/?map=l4&group_by=pod`);
  await page.waitForFunction((n) => window.__trawl && window.__trawl.ready
    && window.__trawl.nodeCount() === n && window.__trawl.drawnPixels('nodes') > 0, Number(expected),
  { timeout: 60000, polling: 20 });
  times.push(Date.now() - start);
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
times.sort((a, b) => a - b);
console.log(`first paint of ${expected} nodes: median ${times[Math.floor(times.length / 2)]} ms (runs: ${times.join(', ')} ms)`);
