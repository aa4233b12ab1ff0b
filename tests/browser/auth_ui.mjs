// The UI against a `trawl serve` that needs a token: the page asks for
// one, draws the map once it is given, and no WebSocket URL carries it.
//
//   node tests/browser/auth_ui.mjs <baseURL> <token> <expectedNodes> <screenshotDir>
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, token, expected, shots] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'trawl-auth-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  viewport: { width: 1280, height: 800 },
});
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  await page.screenshot({ path: join(shots, 'auth-failure.png') }).catch(() => {});
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
};
const page = ctx.pages()[0] || await ctx.newPage();
const sockets = [];
let framesReceived = 0;
page.on('websocket', (ws) => {
  sockets.push(ws.url());
  ws.on('framereceived', () => { framesReceived++; });
});
await page.goto(`${base}/?map=l4&group_by=pod`);
const dialog = page.getByTestId('token-dialog');
try {
  await dialog.waitFor({ state: 'visible', timeout: 20000 });
} catch {
  await fail('no token prompt');
}
await page.screenshot({ path: join(shots, 'auth-prompt.png') });
// A wrong token is refused and asked for again.
await page.getByTestId('token-input').fill('not-the-token');
await page.getByTestId('token-submit').click();
await dialog.waitFor({ state: 'visible', timeout: 20000 }).catch(() => fail('a wrong token was not asked again'));
const again = await page.getByTestId('token-message').textContent();
if (!/not accepted/.test(again)) await fail(`a wrong token's prompt says ${again}`);
await page.getByTestId('token-input').fill(token);
await page.getByTestId('token-submit').click();
try {
  await page.waitForFunction((n) => {
    const t = window.__trawl;
    return t && t.ready && t.nodeCount() === n;
  }, Number(expected), { timeout: 30000 });
} catch {
  await fail(`the map did not draw ${expected} nodes`);
}
await page.screenshot({ path: join(shots, 'auth-map.png') });
if (!sockets.length) await fail('no WebSocket was opened');
for (const url of sockets) {
  if (url.includes(token) || /token|bearer/i.test(url)) await fail(`a WebSocket URL carries the token: ${url}`);
}
if (!framesReceived) await fail('the WebSocket received nothing');
const stored = await page.evaluate(() => sessionStorage.getItem('trawl.token'));
if (stored !== token) await fail('the token is not kept for the tab');
console.log(JSON.stringify({ sockets, framesReceived }));
await ctx.close();
rmSync(profile, { recursive: true, force: true });
