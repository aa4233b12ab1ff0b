// The header's loss warning against a real `trawl hub` whose worker says
// it is losing packets: hidden while nothing grows, then shown with the
// cause in its tooltip once the worker's counters grow.
//
//   node tests/browser/losses_ui.mjs <baseURL> <screenshotDir>
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, shots] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'trawl-losses-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  viewport: { width: 1280, height: 800 },
});
const page = ctx.pages()[0] || await ctx.newPage();
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  await page.screenshot({ path: join(shots, 'losses-failure.png') }).catch(() => {});
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
};
await page.goto(`${base}/?map=l4&group_by=pod`);
const warning = page.getByTestId('loss-warning');
await page.waitForFunction(() => window.__trawl && window.__trawl.ready, null, { timeout: 20000 })
  .catch(() => fail('the map never became ready'));
if (await warning.isVisible()) await fail('a warning before anything grew');
// The worker's losses start growing a few seconds after the page opened.
await warning.waitFor({ state: 'visible', timeout: 30000 }).catch(() => fail('no warning once losses grew'));
const title = await warning.getAttribute('title');
if (!/reorder buffer/.test(title || '')) await fail(`the warning does not name the cause: ${title}`);
if (!/lost/.test(await warning.textContent())) await fail('the warning does not say lost');
await page.screenshot({ path: join(shots, 'losses-warning.png') });
await ctx.close();
rmSync(profile, { recursive: true, force: true });
console.log('losses UI: ok');
