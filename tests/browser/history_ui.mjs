// Time travel and compare mode against a `trawl serve` replaying two
// phases of real traffic (tests/support/phases.rs): the after phase in
// the 10 s from <boundary>, the before phase in the 10 s ahead of it.
//
//   node tests/browser/history_ui.mjs <baseURL> <boundary> <screenshotDir>
import { chromium } from 'playwright-core';
import { join } from 'node:path';

const [base, boundaryArg, shots] = process.argv.slice(2);
const B = Number(boundaryArg);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const logs = [];
page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
const fail = async (why) => {
  console.error(`FAIL: ${why}\n${logs.join('\n')}`);
  await page.screenshot({ path: join(shots, 'history-failure.png') }).catch(() => {});
  await browser.close();
  process.exit(1);
};
const edge = (server) => `pod/shop/client|pod/shop/${server}|http`;
const BEFORE = ['gone', 'flaky', 'slow', 'steady'].map(edge).sort();
const AFTER = ['new', 'flaky', 'slow', 'steady'].map(edge).sort();
const ALL = ['gone', 'new', 'flaky', 'slow', 'steady'].map(edge).sort();

async function waitEdges(want, from, what) {
  try {
    await page.waitForFunction(({ want, from }) => {
      const t = window.__trawl;
      if (!t || !t.ready) return false;
      const w = t.window;
      if (from === null ? w !== null : !w || w.from !== from) return false;
      return JSON.stringify(t.edgeIds().filter((id) => t.compareStatus(id) !== 'removed').sort()) === JSON.stringify(want);
    }, { want, from }, { timeout: 20000 });
  } catch {
    const got = await page.evaluate(() => ({ edges: window.__trawl?.edgeIds(), window: window.__trawl?.window, applied: window.__trawl?.applied }));
    await fail(`${what}: want ${JSON.stringify(want)} from ${from}, got ${JSON.stringify(got)}`);
  }
}

// A window of the past, from the URL: the after phase.
await page.goto(`${base}/?map=l7&group_by=pod&from=${B}&to=${B + 10}`);
await waitEdges(AFTER, B, 'the after window');
const positions = await page.evaluate(() => Object.fromEntries(window.__trawl.nodeIds().map((n) => [n, window.__trawl.nodePosition(n)])));
await page.screenshot({ path: join(shots, 'history-after.png') });

// One step back: the before phase's edges, on the same layout.
await page.getByTestId('time-back').click();
await waitEdges(BEFORE, B - 10, 'one window back');
const url = new URL(page.url());
if (url.searchParams.get('from') !== String(B - 10)) await fail(`the URL does not say the window: ${url}`);
const moved = await page.evaluate((was) => Object.entries(was).filter(([n, p]) => {
  const q = window.__trawl.nodePosition(n);
  return q && (q.x !== p.x || q.y !== p.y);
}).map(([n]) => n), positions);
if (moved.length) await fail(`stepping moved nodes: ${moved}`);
await page.screenshot({ path: join(shots, 'history-before.png') });

// Forward again, then pick the before window by its end time, then the
// after one again; then compare with the window before.
await page.getByTestId('time-forward').click();
await waitEdges(AFTER, B, 'one window forward');
const iso = (secs) => new Date(secs * 1000).toISOString().slice(0, 19);
await page.getByTestId('time-at').fill(iso(B));
await waitEdges(BEFORE, B - 10, 'the window picked by its end');
await page.getByTestId('time-at').fill(iso(B + 10));
await waitEdges(AFTER, B, 'the after window picked by its end');
await page.getByTestId('time-compare').check();
const want = { new: 'added', gone: 'removed', flaky: 'worse', slow: 'worse', steady: 'same' };
try {
  await page.waitForFunction((want) => {
    const t = window.__trawl;
    return Object.entries(want).every(([s, st]) => t.compareStatus(`pod/shop/client|pod/shop/${s}|http`) === st);
  }, want, { timeout: 20000 });
} catch {
  const got = await page.evaluate(() => Object.fromEntries(window.__trawl.edgeIds().map((id) => [id, window.__trawl.compareStatus(id)])));
  await fail(`compare statuses: ${JSON.stringify(got)}`);
}
const colors = await page.evaluate(() => Object.fromEntries(['new', 'gone', 'flaky', 'slow', 'steady'].map((s) => [s, window.__trawl.edgeDisplayColor(`pod/shop/client|pod/shop/${s}|http`)])));
if (colors.new !== '#0e9f6e') await fail(`an added edge is not green: ${JSON.stringify(colors)}`);
if (colors.flaky !== '#e02424' || colors.slow !== '#e02424') await fail(`worse edges are not red: ${JSON.stringify(colors)}`);
if (colors.gone !== null) await fail(`a removed edge is drawn by sigma, not dashed by the overlay: ${JSON.stringify(colors)}`);
if ([colors.new, colors.flaky, colors.gone].includes(colors.steady)) await fail(`an unchanged edge looks changed: ${JSON.stringify(colors)}`);
const reasons = await page.evaluate(() => window.__trawl.compareReasons('pod/shop/client|pod/shop/slow|http').map((r) => r.reason));
if (!reasons.includes('latency_p99')) await fail(`slow's reasons: ${reasons}`);
if (await page.getByTestId('legend-compare').isHidden()) await fail('the legend does not explain compare mode');
const stats = await page.getByTestId('compare-stats').textContent();
if (!/1 added · 1 removed · 2 changed/.test(stats)) await fail(`compare stats: ${stats}`);
// The reason on hover.
const p = await page.evaluate(() => window.__trawl.edgeClientPoint('pod/shop/client|pod/shop/slow|http', 0.6));
await page.mouse.move(p.x, p.y);
try {
  await page.waitForFunction(() => {
    const tip = document.querySelector('[data-testid="edge-tip"]');
    return tip && !tip.hidden && /latency p99/.test(tip.textContent);
  }, null, { timeout: 5000 });
} catch {
  await fail('no reason on hover');
}
await page.screenshot({ path: join(shots, 'history-compare-light.png') });
await page.getByTestId('theme-toggle').click();
await page.getByTestId('theme-toggle').click();
const theme = await page.evaluate(() => document.documentElement.dataset.theme);
await page.screenshot({ path: join(shots, `history-compare-${theme}.png`) });

// Play: from two windows back at 10×, the map steps forward on its own
// and goes live when it reaches the newest data (compare mode stays
// switched on, and has nothing to compare live).
await page.getByTestId('time-back').click();
await waitEdges(BEFORE, B - 10, 'back again');
await page.getByTestId('time-speed').selectOption('10');
await page.getByTestId('time-play').click();
try {
  await page.waitForFunction(() => window.__trawl.window === null && window.__trawl.ready, null, { timeout: 20000 });
} catch {
  await fail(`play did not reach live: ${JSON.stringify(await page.evaluate(() => window.__trawl.window))}`);
}

// Back to live: every edge of both phases, compare mode off.
await page.getByTestId('time-live').click();
await waitEdges(ALL, null, 'live');
const off = await page.evaluate(() => window.__trawl.compareStatus('pod/shop/client|pod/shop/new|http'));
if (off !== null) await fail(`compare mode stayed on live: ${off}`);
// Health by error rate and by latency (`--health-latency 40,1000`).
const health = await page.evaluate(() => Object.fromEntries(['new', 'gone', 'flaky', 'slow', 'steady'].map((s) => [s, window.__trawl.edgeHealth(`pod/shop/client|pod/shop/${s}|http`)])));
const wantHealth = { new: 'ok', gone: 'ok', flaky: 'failing', slow: 'degraded', steady: 'ok' };
if (JSON.stringify(health) !== JSON.stringify(wantHealth)) await fail(`health: ${JSON.stringify(health)}`);
const legendHealth = await page.getByTestId('legend-health').textContent();
if (!/p99 ≥ 40 ms/.test(legendHealth)) await fail(`the legend does not give the latency threshold: ${legendHealth}`);
await page.screenshot({ path: join(shots, 'history-live-health.png') });
console.log('history ui: window from the URL, one step back and forward, compare mode, live again: ok');
await browser.close();
