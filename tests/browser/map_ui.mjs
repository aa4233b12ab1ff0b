#!/usr/bin/env node
// Drives trawl's web UI in headless Chromium against a running server and
// checks what the map draws against expectations taken from the server's
// REST API.
//
//   node tests/browser/map_ui.mjs <baseURL> <expectations.json> <screenshotDir>
//
// Expectations (all but l4_pod_nodes optional; a check whose key is missing
// is skipped):
//   l4_pod_nodes, l7_pod_nodes, l4_namespace_nodes, l4_node_nodes,
//   namespace_to_hide, dns_edges, edge_to_click, invalid_filter, plugins
//
// Every check opens its own page URL, so one failure does not cascade.
// Exit code 0 when every check passed, 1 when one failed, 2 on bad usage,
// 3 when the browser could not be started or the run timed out.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const USAGE = 'usage: node tests/browser/map_ui.mjs <baseURL> <expectations.json> <screenshotDir>';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT = Number(process.env.TRAWL_UI_STEP_TIMEOUT_MS || 15000);
const RUN_TIMEOUT = Number(process.env.TRAWL_UI_RUN_TIMEOUT_MS || 240000);

const [baseArg, expPath, shotDir] = process.argv.slice(2);
if (!baseArg || !expPath || !shotDir) {
  console.error(USAGE);
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, '');
let exp;
try {
  exp = JSON.parse(fs.readFileSync(expPath, 'utf8'));
} catch (err) {
  console.error(`cannot read expectations ${expPath}: ${err.message}`);
  process.exit(2);
}
if (!Number.isInteger(exp.l4_pod_nodes)) {
  console.error('expectations must contain an integer l4_pod_nodes');
  process.exit(2);
}
fs.mkdirSync(shotDir, { recursive: true });

const watchdog = setTimeout(() => {
  console.error(`FAIL: the whole run took longer than ${RUN_TIMEOUT} ms`);
  process.exit(3);
}, RUN_TIMEOUT);

// ---- browser ----------------------------------------------------------

const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'trawl-ui-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1440, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
} catch (err) {
  console.error(`FAIL: cannot start Chromium at ${CHROMIUM}: ${err.message}`);
  fs.rmSync(userDir, { recursive: true, force: true });
  process.exit(3);
}
const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(STEP_TIMEOUT);
const pageErrors = [];
page.on('pageerror', (err) => pageErrors.push(err.message));
page.on('console', (msg) => {
  if (msg.type() === 'error') pageErrors.push(`console: ${msg.text()}`);
});

// ---- helpers ----------------------------------------------------------

const results = { passed: 0, failed: 0, skipped: 0 };
let shotNo = 0;

async function shot(name) {
  shotNo++;
  const file = path.join(shotDir, `${String(shotNo).padStart(2, '0')}-${name}.png`);
  try {
    await page.screenshot({ path: file });
  } catch (err) {
    console.log(`  (screenshot ${file} failed: ${err.message})`);
  }
  return file;
}

async function check(name, needs, fn) {
  const missing = needs.filter((k) => exp[k] === undefined || exp[k] === null);
  if (missing.length) {
    results.skipped++;
    console.log(`skip - ${name} (no ${missing.join(', ')} in expectations)`);
    return;
  }
  try {
    await fn();
    results.passed++;
    console.log(`ok   - ${name}`);
  } catch (err) {
    results.failed++;
    const file = await shot(`FAILED-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`);
    console.log(`FAIL - ${name}\n       ${String(err.message).split('\n').join('\n       ')}\n       screenshot: ${file}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Polls fn in the page until it returns a value equal to want (or truthy
// when want is undefined); reports the last value seen on timeout.
async function waitFor(desc, fn, arg, want) {
  const deadline = Date.now() + STEP_TIMEOUT;
  let last;
  for (;;) {
    try {
      last = await page.evaluate(fn, arg);
    } catch (err) {
      last = `error: ${err.message}`;
    }
    const ok = want === undefined ? Boolean(last) : JSON.stringify(last) === JSON.stringify(want);
    if (ok) return last;
    if (Date.now() > deadline) {
      throw new Error(`${desc}: expected ${want === undefined ? 'truthy' : JSON.stringify(want)}, got ${JSON.stringify(last)}`);
    }
    await page.waitForTimeout(100);
  }
}

// Opens the UI with the given query and waits until the server accepted
// that subscription and its snapshot is on the map.
async function open(query) {
  await page.goto(`${base}/?${query}`, { waitUntil: 'domcontentloaded' });
  const q = new URLSearchParams(query);
  await waitApplied({ map: q.get('map') || 'l4', group_by: q.get('group_by') || 'pod', filter: q.get('filter') || '' });
}

async function waitApplied(want) {
  await waitFor(
    `map showing ${JSON.stringify(want)}`,
    (w) => {
      const t = window.__trawl;
      if (!t || !t.ready || !t.applied) return false;
      return Object.entries(w).every(([k, v]) => t.applied[k] === v);
    },
    want,
  );
}

const T = (id) => `[data-testid="${id}"]`;

async function restMap(query) {
  const r = await fetch(`${base}/api/map?${query}`);
  if (!r.ok) throw new Error(`GET /api/map?${query}: HTTP ${r.status}`);
  return r.json();
}

async function submitFilter(text) {
  const input = page.locator(T('filter-input'));
  await input.fill(text);
  await input.press('Enter');
}

// ---- checks -----------------------------------------------------------

await check('L4 map by pod draws the expected nodes', ['l4_pod_nodes'], async () => {
  await open('map=l4&group_by=pod');
  await waitFor('node count', () => window.__trawl.nodeCount(), null, exp.l4_pod_nodes);
  await waitFor('visible node count', () => window.__trawl.visibleNodeCount(), null, exp.l4_pod_nodes);
  if (exp.l4_pod_nodes > 0) {
    const px = await page.evaluate(() => window.__trawl.drawnPixels('nodes'));
    assert(px > 0, 'the WebGL node layer has no painted pixels');
  }
  assert(/map=l4/.test(page.url()) && /group_by=pod/.test(page.url()), `URL does not carry the view: ${page.url()}`);
  await shot('l4-pod');
});

await check('switching to L7 draws the L7 map', ['l7_pod_nodes'], async () => {
  await open('map=l4&group_by=pod');
  await page.click(T('map-switch-l7'));
  await waitApplied({ map: 'l7', group_by: 'pod' });
  await waitFor('L7 node count', () => window.__trawl.nodeCount(), null, exp.l7_pod_nodes);
  const protos = await page.evaluate(() => window.__trawl.edgeProtocols());
  const l4ish = protos.filter((p) => p === 'tcp' || p === 'udp');
  assert(l4ish.length === 0, `L7 map still has L4 edges: ${l4ish.join(', ')}`);
  assert(/map=l7/.test(page.url()), `URL not updated: ${page.url()}`);
  const pressed = await page.getAttribute(T('map-switch-l7'), 'aria-pressed');
  assert(pressed === 'true', 'L7 switch is not shown as selected');
  await shot('l7-pod');
  await page.click(T('map-switch-l4'));
  await waitApplied({ map: 'l4', group_by: 'pod' });
  await waitFor('back to L4 node count', () => window.__trawl.nodeCount(), null, exp.l4_pod_nodes);
});

await check('grouping by namespace draws one node per namespace', ['l4_namespace_nodes'], async () => {
  await open('map=l4&group_by=pod');
  await page.selectOption(T('group-by'), 'namespace');
  await waitApplied({ map: 'l4', group_by: 'namespace' });
  await waitFor('namespace node count', () => window.__trawl.nodeCount(), null, exp.l4_namespace_nodes);
  const bad = await page.evaluate(() =>
    window.__trawl.nodeIds().filter((id) => !['namespace', 'external'].includes(window.__trawl.node(id).kind)),
  );
  assert(bad.length === 0, `non-namespace nodes while grouped by namespace: ${bad.join(', ')}`);
  assert(/group_by=namespace/.test(page.url()), `URL not updated: ${page.url()}`);
  await shot('l4-namespace');
});

await check('grouping by node draws one node per k8s node', ['l4_node_nodes'], async () => {
  await open('map=l4&group_by=node');
  await waitFor('k8s node count', () => window.__trawl.nodeCount(), null, exp.l4_node_nodes);
});

await check('nodes keep their positions across live updates', ['l4_pod_nodes'], async () => {
  await open('map=l4&group_by=pod');
  const before = await page.evaluate(() => Object.fromEntries(window.__trawl.nodeIds().map((id) => [id, window.__trawl.nodePosition(id)])));
  const seq0 = await page.evaluate(() => window.__trawl.lastSeq);
  // An idle server sends no deltas; then there is nothing to compare.
  await page.waitForFunction((s) => window.__trawl.lastSeq > s, seq0, { timeout: 4000 }).catch(() => {});
  const after = await page.evaluate((ids) => Object.fromEntries(ids.map((id) => [id, window.__trawl.nodePosition(id)])), Object.keys(before));
  const moved = Object.keys(before).filter((id) => after[id] && JSON.stringify(after[id]) !== JSON.stringify(before[id]));
  assert(moved.length === 0, `nodes moved on update: ${moved.join(', ')}`);
  // The same data must give the same picture after a reload.
  await open('map=l4&group_by=pod');
  const reload = await page.evaluate((ids) => Object.fromEntries(ids.map((id) => [id, window.__trawl.nodePosition(id)])), Object.keys(before));
  const differ = Object.keys(before).filter((id) => reload[id] && JSON.stringify(reload[id]) !== JSON.stringify(before[id]));
  assert(differ.length === 0, `layout differs after reload for: ${differ.join(', ')}`);
});

await check('hiding a namespace in the legend removes its nodes and edges', ['namespace_to_hide'], async () => {
  const ns = exp.namespace_to_hide;
  await open('map=l4&group_by=pod');
  await waitFor('node count', () => window.__trawl.nodeCount(), null, exp.l4_pod_nodes);
  const model = await page.evaluate((ns) => {
    const t = window.__trawl;
    const inNs = t.nodeIds().filter((id) => t.node(id).namespace === ns);
    const set = new Set(inNs);
    const keptEdges = t.edgeIds().filter((id) => !set.has(t.edge(id).source) && !set.has(t.edge(id).target));
    return { inNs, nodes: t.nodeCount(), keptEdges: keptEdges.sort() };
  }, ns);
  assert(model.inNs.length > 0, `namespace ${ns} has no nodes on the L4 pod map`);
  await page.click(T(`legend-ns-${ns}`));
  await waitFor('visible nodes after hiding', () => window.__trawl.visibleNodeCount(), null, model.nodes - model.inNs.length);
  await waitFor('visible edges after hiding', () => window.__trawl.visibleEdgeIds().sort(), null, model.keptEdges);
  const visible = await page.evaluate(() => window.__trawl.visibleNodeIds());
  const leaked = visible.filter((id) => model.inNs.includes(id));
  assert(leaked.length === 0, `hidden namespace still drawn: ${leaked.join(', ')}`);
  assert(new URL(page.url()).searchParams.get('hide_ns') === ns, `URL does not carry hide_ns: ${page.url()}`);
  assert((await page.getAttribute(T(`legend-ns-${ns}`), 'aria-pressed')) === 'false', 'legend toggle not shown as off');
  await shot('namespace-hidden');

  await page.click(T('legend-reset'));
  await waitFor('visible nodes after reset', () => window.__trawl.visibleNodeCount(), null, model.nodes);
  await page.click(T('legend-hide-all'));
  await waitFor(
    'no namespaced node visible after Hide all',
    () => window.__trawl.visibleNodeIds().filter((id) => window.__trawl.node(id).namespace).length,
    null,
    0,
  );
  await page.click(T('legend-reset'));
  await waitFor('visible nodes after second reset', () => window.__trawl.visibleNodeCount(), null, model.nodes);
});

await check('health halos follow the error rate, and edges keep their protocol colour', [], async () => {
  await open('map=l7&group_by=pod');
  const model = await restMap('map=l7&group_by=pod');
  await waitFor('L7 edges drawn', () => window.__trawl.edgeCount(), null, model.edges.length);
  // The server's thresholds (`--health`; Kiali's defaults 0.1 % and 20 %).
  const t = model.health;
  assert(t && t.degraded === 0.001 && t.failing === 0.2, `thresholds ${JSON.stringify(t)}`);
  const want = (e) => {
    const r = e.requests ? e.errors / e.requests : 0;
    return r >= t.failing ? 'failing' : r >= t.degraded ? 'degraded' : 'ok';
  };
  const unhealthy = model.edges.filter((e) => want(e) !== 'ok');
  assert(unhealthy.length > 0 && unhealthy.length < model.edges.length, 'the demo has healthy and unhealthy edges');
  for (const e of model.edges) {
    const got = await page.evaluate((id) => window.__trawl.edgeHealth(id), e.id);
    assert(got === want(e), `${e.id}: ${e.errors}/${e.requests} errors drawn as ${got}, not ${want(e)}`);
    const color = await page.evaluate((id) => window.__trawl.edgeColor(id), e.id);
    const legendColor = (model.legend.find((l) => l.protocol === e.protocol) || {}).color;
    assert(color === legendColor, `${e.id} is ${color}, not its protocol's ${legendColor}`);
    if (want(e) === 'failing') {
      const ring = await page.evaluate((id) => window.__trawl.nodeHealth(id), e.target);
      assert(ring === 'failing', `the server ${e.target} of a failing edge has health ${ring}`);
    }
  }
  // The halos are drawn: red pixels on the layer under the edges.
  const red = await page.evaluate(() => {
    const view = window.__trawl;
    view.drawnPixels('edges');
    const c = document.querySelector('[data-testid="graph"] canvas.sigma-groups');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 170 && d[i + 1] < 100 && d[i + 2] < 100 && d[i + 3] > 60) n++;
    return n;
  });
  assert(red > 50, `only ${red} red halo pixels`);
  const legendText = await page.textContent(T('legend-health'));
  assert(/Degraded/.test(legendText) && /Failing/.test(legendText), `the legend does not explain health: ${legendText}`);
  await shot('l7-health');
  // Errors only: just the unhealthy edges stay, and the URL keeps it.
  await page.check(T('errors-only'));
  await waitFor('only unhealthy edges visible', () => window.__trawl.visibleEdgeIds().sort(), null, unhealthy.map((e) => e.id).sort());
  assert(new URL(page.url()).searchParams.get('errors_only') === 'true', `URL does not carry errors only: ${page.url()}`);
  await shot('l7-errors-only');
  await page.uncheck(T('errors-only'));
  await waitFor('every edge visible again', () => window.__trawl.visibleEdgeCount(), null, model.edges.length);
});

await check('labels give way: the heaviest edges keep theirs, zooming in shows more', [], async () => {
  await open('map=l4&group_by=pod');
  const model = await restMap('map=l4&group_by=pod');
  await waitFor('edges drawn', () => window.__trawl.edgeCount(), null, model.edges.length);
  assert(model.edges.length > 2, 'the demo has more than two edges');
  await page.evaluate(() => window.__trawl.setLabelsAtFit(2));
  await page.evaluate(() => window.__trawl.zoomBy(1));
  const heaviest = await page.evaluate(() => {
    const ids = window.__trawl.visibleEdgeIds();
    return ids.map((id) => [id, window.__trawl.edgeSize(id)]).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 2).map((x) => x[0]).sort();
  });
  await waitFor('only the two heaviest edges labelled', () => window.__trawl.labelledEdgeIds().sort(), null, heaviest);
  await page.evaluate(() => window.__trawl.zoomBy(0.25));
  await waitFor('zoomed in: every edge labelled', () => window.__trawl.labelledEdgeIds().length, null, model.edges.length);
  await page.evaluate(() => window.__trawl.setLabelsAtFit(12));
});

await check('a new filter is laid out afresh and fills the canvas', ['dns_edges'], async () => {
  await open('map=l7&group_by=pod');
  await submitFilter('dns');
  await waitApplied({ map: 'l7', filter: 'dns' });
  await waitFor('DNS edge count', () => window.__trawl.edgeCount(), null, exp.dns_edges);
  await page.waitForTimeout(400);
  const fit = await page.evaluate(() => {
    const r = document.querySelector('[data-testid="graph"]').getBoundingClientRect();
    const pts = window.__trawl.visibleNodeIds().map((id) => window.__trawl.nodeClientPoint(id));
    const xs = pts.map((p) => p.x);
    const ys = pts.map((p) => p.y);
    const cx = (Math.min(...xs) + Math.max(...xs)) / 2 - r.left;
    const cy = (Math.min(...ys) + Math.max(...ys)) / 2 - r.top;
    const span = Math.max((Math.max(...xs) - Math.min(...xs)) / r.width, (Math.max(...ys) - Math.min(...ys)) / r.height);
    return { dx: Math.abs(cx / r.width - 0.5), dy: Math.abs(cy / r.height - 0.5), span };
  });
  assert(fit.dx < 0.15 && fit.dy < 0.15, `the filtered map is off centre: ${JSON.stringify(fit)}`);
  assert(fit.span > 0.25, `the filtered map is drawn small: ${JSON.stringify(fit)}`);
  await shot('filter-fit');
});

await check('filter "dns" leaves only DNS edges', ['dns_edges'], async () => {
  await open('map=l7&group_by=pod');
  await submitFilter('dns');
  await waitApplied({ map: 'l7', filter: 'dns' });
  await waitFor('DNS edge count', () => window.__trawl.edgeCount(), null, exp.dns_edges);
  const protos = await page.evaluate(() => window.__trawl.edgeProtocols());
  const other = protos.filter((p) => p !== 'dns');
  assert(other.length === 0, `non-DNS edges under filter dns: ${other.join(', ')}`);
  assert(new URL(page.url()).searchParams.get('filter') === 'dns', `URL does not carry the filter: ${page.url()}`);
  await shot('filter-dns');
});

await check('an invalid filter shows its error and keeps the previous filter', [], async () => {
  const bad = exp.invalid_filter || 'status_code ==';
  await open('map=l7&group_by=pod&filter=dns');
  const edgesBefore = await page.evaluate(() => window.__trawl.edgeIds().sort());
  const errorsBefore = await page.evaluate(() => window.__trawl.errors);
  await submitFilter(bad);
  await waitFor('server error received', (n) => window.__trawl.errors > n, errorsBefore);
  await page.waitForSelector(`${T('filter-error')}:not([hidden])`);
  const text = (await page.textContent(T('filter-error'))).trim();
  const serverMsg = await page.evaluate(() => window.__trawl.lastError.error);
  assert(text.length > 0, 'filter error element is empty');
  assert(text.includes(serverMsg), `error element does not show the server's message ${JSON.stringify(serverMsg)}: ${JSON.stringify(text)}`);
  assert((await page.getAttribute(T('filter-input'), 'aria-invalid')) === 'true', 'filter input not marked invalid');
  await waitApplied({ map: 'l7', filter: 'dns' });
  const edgesAfter = await page.evaluate(() => window.__trawl.edgeIds().sort());
  assert(JSON.stringify(edgesAfter) === JSON.stringify(edgesBefore), 'the map changed although the filter was rejected');
  assert(new URL(page.url()).searchParams.get('filter') === 'dns', `URL should keep the accepted filter: ${page.url()}`);
  await shot('filter-error');
  // A corrected filter clears the error.
  await submitFilter('');
  await waitApplied({ map: 'l7', filter: '' });
  await page.waitForSelector(`${T('filter-error')}[hidden]`, { state: 'attached' });
});

await check('a shared URL with an invalid filter shows the error and the unfiltered map', [], async () => {
  const bad = exp.invalid_filter || 'status_code ==';
  await page.goto(`${base}/?map=l4&group_by=pod&filter=${encodeURIComponent(bad)}`, { waitUntil: 'domcontentloaded' });
  await waitApplied({ map: 'l4', group_by: 'pod', filter: '' });
  await page.waitForSelector(`${T('filter-error')}:not([hidden])`);
  assert((await page.inputValue(T('filter-input'))) === bad, 'the rejected filter text should stay in the input for fixing');
  await waitFor('unfiltered node count', () => window.__trawl.nodeCount(), null, exp.l4_pod_nodes);
});

await check('the settings dialog changes the subscription', [], async () => {
  await open('map=l4&group_by=pod');
  await page.click(T('settings-button'));
  await page.waitForSelector(`${T('settings-dialog')}[open]`);
  await page.check(T('settings-map-l7'));
  await page.selectOption(T('settings-group-by'), 'namespace');
  await page.check(T('settings-mode-rate'));
  await page.uncheck(T('settings-bandwidth'));
  assert(await page.isDisabled(T('settings-include-request')), 'request sizes stay enabled without bandwidth');
  await page.click(T('settings-apply'));
  await waitApplied({ map: 'l7', group_by: 'namespace', mode: 'rate', bandwidth: false });
  const q = new URL(page.url()).searchParams;
  assert(q.get('map') === 'l7' && q.get('group_by') === 'namespace' && q.get('mode') === 'rate' && q.get('bandwidth') === 'false', `URL does not carry the settings: ${page.url()}`);
  assert((await page.inputValue(T('group-by'))) === 'namespace', 'top-bar grouping select not synced');
  await shot('settings-applied');
});

await check('clicking an edge shows its metrics in the details panel', ['edge_to_click'], async () => {
  const id = exp.edge_to_click;
  const group = id.startsWith('namespace/') ? 'namespace' : id.startsWith('node/') ? 'node' : 'pod';
  // Find which map the edge lives on, and its numbers as the API reports them.
  let map = exp.edge_to_click_map;
  let restEdge;
  for (const m of map ? [map] : ['l4', 'l7']) {
    const snap = await restMap(`map=${m}&group_by=${group}&mode=cumulative`);
    restEdge = (snap.edges || []).find((e) => e.id === id);
    if (restEdge) {
      map = m;
      break;
    }
  }
  assert(restEdge, `edge ${id} is on neither the L4 nor the L7 ${group} map of /api/map`);
  await open(`map=${map}&group_by=${group}`);
  await waitFor(`edge ${id} on the map`, (e) => window.__trawl.edgeIds().includes(e), id);
  assert(await page.evaluate((e) => window.__trawl.selectEdge(e), id), 'selectEdge returned false');
  await page.waitForSelector(`${T('details-panel')}:not([hidden])`);
  assert((await page.getAttribute(T('details-panel'), 'data-selected-id')) === id, 'details panel shows another item');
  // The feed carries edge summaries; the panel asks the server for the rest.
  await page.waitForSelector(`${T('details-panel')}[data-detail="ready"]`);

  const keys = map === 'l7'
    ? [['requests', (e) => e.requests], ['errors', (e) => e.errors], ['request_bytes', (e) => e.request_bytes], ['response_bytes', (e) => e.response_bytes],
       ['latency_p50', (e) => e.latency_us?.p50], ['latency_p95', (e) => e.latency_us?.p95], ['latency_p99', (e) => e.latency_us?.p99]]
    : [['flows', (e) => e.flows], ['to_server_packets', (e) => e.to_server?.packets], ['to_server_bytes', (e) => e.to_server?.bytes],
       ['to_client_packets', (e) => e.to_client?.packets], ['to_client_bytes', (e) => e.to_client?.bytes],
       // A TCP edge's health (the flow table's, in replay).
       ...(restEdge.tcp_health ? [['retransmits_to_server', (e) => e.tcp_health?.retransmits_to_server],
         ['retransmits_to_client', (e) => e.tcp_health?.retransmits_to_client], ['resets_by_server', (e) => e.tcp_health?.resets_by_server],
         ['failed_connects', (e) => e.tcp_health?.failed_connects]] : [])];
  const shown = await page.evaluate((ks) => {
    const out = {};
    for (const k of ks) {
      const el = document.querySelector(`[data-testid="details-panel"] [data-testid="detail-${k}"]`);
      out[k] = el ? { value: el.dataset.value, text: el.textContent.trim() } : null;
    }
    return { out, edge: window.__trawl.edge(document.querySelector('[data-testid="details-panel"]').dataset.selectedId) };
  }, keys.map(([k]) => k));
  const counters = new Set(['requests', 'errors', 'request_bytes', 'response_bytes', 'flows', 'to_server_packets', 'to_server_bytes', 'to_client_packets', 'to_client_bytes',
    'retransmits_to_server', 'retransmits_to_client', 'resets_by_server', 'failed_connects']);
  for (const [k, get] of keys) {
    const s = shown.out[k];
    assert(s, `details panel has no ${k}`);
    assert(s.text && s.text !== '–', `details panel shows no value for ${k}`);
    const ui = get(shown.edge);
    const rest = get(restEdge);
    if (rest === undefined || rest === null) continue;
    assert(Number(s.value) === Number(ui), `${k}: panel shows ${s.value}, map data has ${ui}`);
    // Live traffic may have added to counters since the REST call, never taken away.
    if (counters.has(k)) assert(Number(s.value) >= Number(rest), `${k}: panel shows ${s.value}, API reported ${rest}`);
  }
  if (map === 'l7' && Array.isArray(restEdge.top) && restEdge.top.length) {
    const names = await page.$$eval(`${T('details-panel')} ${T('detail-top')} li`, (lis) => lis.map((li) => li.dataset.name));
    assert(names.includes(restEdge.top[0].name), `top list lacks ${restEdge.top[0].name}: ${names.join(', ')}`);
  }
  await shot('edge-details');

  // The same through a real mouse click on the canvas (WebGL picking).
  await page.evaluate(() => window.__trawl.clearSelection());
  const pt = await page.evaluate((e) => window.__trawl.edgeClientPoint(e), id);
  if (restEdge.source !== restEdge.target && pt) {
    // WebGL picking reads a frame sigma renders after the last change, and
    // an edge label may sit on the midpoint: try a few points along it.
    let sel = null;
    for (const at of [0.5, 0.4, 0.6, 0.3, 0.7]) {
      await page.waitForTimeout(300);
      const p = await page.evaluate(([e, f]) => window.__trawl.edgeClientPoint(e, f), [id, at]);
      await page.mouse.click(p.x, p.y);
      await page.waitForTimeout(200);
      sel = await page.evaluate(() => window.__trawl.selection());
      if (sel) break;
    }
    assert(sel, 'no point along the edge selected it with a mouse click');
    assert(sel.type === 'edge', `mouse click selected a ${sel.type}, not an edge`);
    const picked = await page.evaluate((e) => window.__trawl.edge(e), sel.id);
    const same = new Set([restEdge.source, restEdge.target]);
    assert(same.has(picked.source) && same.has(picked.target), `mouse click selected ${sel.id}, not an edge between ${[...same].join(' and ')}`);
  }
});

await check('an L4 edge shows its TCP health in the details panel', [], async () => {
  const snap = await restMap('map=l4&group_by=pod&mode=cumulative');
  const edge = (snap.edges || []).find((e) => e.l4 === 'tcp' && e.tcp_health && e.source !== e.target);
  assert(edge, 'no TCP edge with health on the L4 map');
  await open('map=l4&group_by=pod');
  await waitFor(`edge ${edge.id} on the map`, (e) => window.__trawl.edgeIds().includes(e), edge.id);
  assert(await page.evaluate((e) => window.__trawl.selectEdge(e), edge.id), 'selectEdge returned false');
  await page.waitForSelector(`${T('details-panel')}[data-detail="ready"]`);
  for (const k of ['retransmits_to_server', 'retransmits_to_client', 'resets_by_client', 'resets_by_server', 'failed_connects']) {
    const v = await page.getAttribute(`${T('details-panel')} ${T(`detail-${k}`)}`, 'data-value').catch(() => null);
    assert(v !== null, `the panel has no ${k}`);
    // Counters only grow while the demo loops.
    assert(Number(v) >= edge.tcp_health[k], `${k}: panel ${v}, API ${edge.tcp_health[k]}`);
  }
  if (edge.tcp_health.handshakes) {
    const rtt = await page.getAttribute(`${T('details-panel')} ${T('detail-handshake_rtt_mean')}`, 'data-value');
    assert(Number(rtt) > 0, `handshake RTT ${rtt}`);
  }
  await shot('l4-tcp-health');
  await page.evaluate(() => window.__trawl.clearSelection());
});

await check('plugins tab lists the plugins', [], async () => {
  await open('map=l4&group_by=pod');
  await page.click(T('plugins-tab'));
  await page.waitForSelector(`${T('plugins-view')}:not([hidden])`);
  await waitFor('plugins loaded', () => /loaded/.test(document.querySelector('[data-testid="plugins-status"]').textContent));
  const rows = await page.$$eval(`${T('plugins-table')} tbody tr[data-testid^="plugin-row-"]`, (trs) => trs.length);
  if (Number.isInteger(exp.plugins)) assert(rows === exp.plugins, `plugins table has ${rows} rows, expected ${exp.plugins}`);
  const api = await (await fetch(`${base}/api/plugins`)).json();
  assert(rows === api.length, `plugins table has ${rows} rows, /api/plugins has ${api.length}`);
  assert(/tab=plugins/.test(page.url()), `URL does not carry the tab: ${page.url()}`);
  await shot('plugins');
});

await check('dark theme renders', [], async () => {
  await open('map=l7&group_by=pod');
  for (let i = 0; i < 3; i++) {
    if ((await page.getAttribute('html', 'data-theme')) === 'dark') break;
    await page.click(T('theme-toggle'));
  }
  assert((await page.getAttribute('html', 'data-theme')) === 'dark', 'theme toggle never reached dark');
  await shot('dark-l7');
});

await check('no uncaught errors in the page', [], async () => {
  assert(pageErrors.length === 0, pageErrors.slice(0, 10).join('\n'));
});

// ---- done -------------------------------------------------------------

await context.close();
fs.rmSync(userDir, { recursive: true, force: true });
clearTimeout(watchdog);
console.log(`screenshots in ${shotDir}`);
console.log(`${results.passed} passed, ${results.failed} failed, ${results.skipped} skipped`);
process.exit(results.failed ? 1 : 0);
