// The map's Cytoscape export, read by cytoscape.js itself in a real
// Chromium: `GET /api/export?format=cytoscape` from a serving trawl, drawn
// with the cose layout; every node and edge of the map must be there, and
// every edge between two of its nodes.
//
//   node tests/browser/cytoscape_export.mjs <baseURL> <nodes> <edges> <screenshotDir>
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const [base, nodes, edges, shots] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const profile = mkdtempSync(join(tmpdir(), 'trawl-cytoscape-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
  viewport: { width: 1000, height: 700 },
});
const page = ctx.pages()[0] || await ctx.newPage();
const done = async (code, why) => {
  if (why) console.error(`FAIL: ${why}`);
  await page.screenshot({ path: join(shots, code ? 'cytoscape-failure.png' : 'cytoscape-export.png') }).catch(() => {});
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(code);
};
// The export is fetched from the page's own origin, as a user's tool would.
await page.goto(`${base}/api/health`);
await page.setContent('<div id="cy" style="width: 960px; height: 660px"></div>');
await page.addScriptTag({ path: join(here, 'node_modules/cytoscape/dist/cytoscape.min.js') });
const got = await page.evaluate(async (base) => {
  const doc = await (await fetch(`${base}/api/export?format=cytoscape&map=l7&group_by=namespace`)).json();
  const cy = cytoscape({ container: document.getElementById('cy'), elements: doc.elements,
    layout: { name: 'cose', animate: false }, style: [{ selector: 'node', style: { label: 'data(label)' } }] });
  const dangling = cy.edges().filter((e) => e.source().empty() || e.target().empty()).length;
  return { nodes: cy.nodes().length, edges: cy.edges().length, dangling,
    requests: cy.edges().map((e) => e.data('requests')).reduce((a, b) => a + b, 0) };
}, base).catch((e) => done(1, `cytoscape.js did not take the export: ${e}`));
if (got.nodes !== Number(nodes) || got.edges !== Number(edges)) {
  await done(1, `cytoscape.js has ${got.nodes} nodes and ${got.edges} edges; the map has ${nodes} and ${edges}`);
}
if (got.dangling !== 0) await done(1, `${got.dangling} edges without both ends`);
if (!(got.requests > 0)) await done(1, 'the edges carry no request counts');
console.log(`cytoscape export: ok (${got.nodes} nodes, ${got.edges} edges, ${got.requests} requests)`);
await done(0);
