// trawl web UI: wiring between the URL, the controls, the WebSocket feed
// and the map.
//
// The URL query is the source of truth for what is being looked at, so a
// view can be shared or reloaded. The server's answer decides what is
// actually shown: a subscription only counts once its snapshot arrives,
// and a rejected filter leaves the previous one in force.

import { GraphView, L4_COLORS, edgeProtocol } from './graph-view.js';
import { Legend } from './legend.js';
import { renderDetails } from './details.js';
import { PluginsView } from './plugins.js';
import { LossWatch } from './losses.js';
import { escapeHtml, fmtCount } from './format.js';
import { apiFetch, ensureAccess, wsProtocols } from './auth.js';
import { TimeBar } from './timebar.js';

const $ = (sel) => document.querySelector(sel);
const $t = (id) => document.querySelector(`[data-testid="${id}"]`);

const DEFAULTS = { map: 'l4', group_by: 'pod', filter: '', mode: 'cumulative', bandwidth: true, include_request: true, include_response: true };
const LARGE_MAP = 1500;
const L4_META = {
  tcp: { protocol: 'tcp', abbreviation: 'TCP', long_name: 'Transmission Control Protocol', color: L4_COLORS.tcp },
  udp: { protocol: 'udp', abbreviation: 'UDP', long_name: 'User Datagram Protocol', color: L4_COLORS.udp },
};

// ---- state ------------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  const bool = (k) => (q.has(k) ? !/^(0|false|no|off)$/i.test(q.get(k)) : DEFAULTS[k]);
  const list = (k) => new Set((q.get(k) || '').split(',').map((s) => s.trim()).filter(Boolean));
  const pick = (k, allowed) => (allowed.includes(q.get(k)) ? q.get(k) : DEFAULTS[k]);
  return {
    map: pick('map', ['l4', 'l7']),
    group_by: pick('group_by', ['pod', 'namespace', 'node']),
    filter: q.get('filter') || '',
    mode: pick('mode', ['cumulative', 'rate']),
    bandwidth: bool('bandwidth'),
    include_request: bool('include_request'),
    include_response: bool('include_response'),
    hidden: { ns: list('hide_ns'), node: list('hide_node'), proto: list('hide_proto') },
    errors_only: q.has('errors_only') && !/^(0|false|no|off)$/i.test(q.get('errors_only')),
    tab: q.get('tab') === 'plugins' ? 'plugins' : 'map',
    // A past window (unix seconds), or null: live.
    window: windowFrom(q),
    compare: q.has('compare') && !/^(0|false|no|off)$/i.test(q.get('compare')),
  };
}

function windowFrom(q) {
  const from = Number(q.get('from'));
  const to = Number(q.get('to'));
  return q.has('from') && q.has('to') && Number.isFinite(from) && Number.isFinite(to) && from < to ? { from, to } : null;
}

const state = readUrl();

// The last subscription the server accepted, and feed bookkeeping.
let applied = null;
// What history covered of the window shown (null: live).
let windowShown = null;
let lastSeq = 0;
const counters = { snapshots: 0, deltas: 0, errors: 0 };
let lastError = null;
// The server bounds what a client draws (the heaviest edges); totals say
// how much of the map that is.
let totals = null;
// Full numbers of the selected edge: the feed carries summaries only.
let detail = null;
let detailAsked = 0;

// What only changes how edges are drawn follows the controls at once; map
// and grouping follow the accepted subscription, since they describe the
// data on screen.
function visuals() {
  const { mode, bandwidth, include_request, include_response } = state;
  return { mode, bandwidth, include_request, include_response };
}

function writeUrl() {
  const q = new URLSearchParams();
  q.set('map', state.map);
  q.set('group_by', state.group_by);
  if (state.filter) q.set('filter', state.filter);
  if (state.mode !== DEFAULTS.mode) q.set('mode', state.mode);
  for (const k of ['bandwidth', 'include_request', 'include_response']) if (!state[k]) q.set(k, 'false');
  for (const [k, key] of [['ns', 'hide_ns'], ['node', 'hide_node'], ['proto', 'hide_proto']]) {
    if (state.hidden[k].size) q.set(key, [...state.hidden[k]].sort().join(','));
  }
  if (state.errors_only) q.set('errors_only', 'true');
  if (state.window) {
    q.set('from', String(state.window.from));
    q.set('to', String(state.window.to));
  }
  if (state.compare) q.set('compare', 'true');
  if (state.tab !== 'map') q.set('tab', state.tab);
  history.replaceState(null, '', `${location.pathname}?${q}`);
}

function subscription() {
  const { map, group_by, filter, mode, bandwidth, include_request, include_response } = state;
  const sub = { type: 'subscribe', map, group_by, filter, mode, bandwidth, include_request, include_response };
  // A past window: the server answers with its map once, from history.
  if (state.window) Object.assign(sub, { from: String(state.window.from), to: String(state.window.to) });
  return sub;
}

// ---- protocol metadata -------------------------------------------------

const legendMeta = new Map();
const pluginMeta = new Map();

function protoInfo(proto) {
  if (!proto) return null;
  const k = proto.toLowerCase();
  return legendMeta.get(k) || pluginMeta.get(k) || L4_META[k] || null;
}

function onPlugins(list) {
  let changed = false;
  for (const p of list) {
    if (!p || !p.name) continue;
    const k = String(p.name).toLowerCase();
    const m = { protocol: k, abbreviation: p.abbreviation, long_name: p.long_name, color: p.color };
    if (JSON.stringify(pluginMeta.get(k)) !== JSON.stringify(m)) changed = true;
    pluginMeta.set(k, m);
  }
  if (changed) {
    view.recolorEdges();
    scheduleUi();
  }
}

// ---- views ------------------------------------------------------------

const detailsEl = $t('details-panel');
let selection = null;

performance.mark('trawl:app-start');
const view = new GraphView($t('graph'), {
  protoInfo,
  onSelect: (sel) => {
    selection = sel;
    if (sel?.type === 'edge') {
      if (detail?.id !== sel.id) detail = null;
      conn.askDetail(sel.id);
    }
    renderDetails(detailsEl, sel, view, protoInfo, detail);
  },
});
view.setStyle({ map: state.map, group_by: state.group_by, ...visuals() });

const legend = new Legend($t('legend'), {
  onToggle: (kind, set) => setHidden(kind, set),
  onHideAll: () => {
    const c = view.census();
    setHidden('ns', new Set([...state.hidden.ns, ...c.ns.keys()]));
    setHidden('node', new Set([...state.hidden.node, ...c.nodes.keys()]));
  },
  onReset: () => {
    for (const k of ['ns', 'node', 'proto']) setHidden(k, new Set());
  },
  onErrorsOnly: (on) => {
    state.errors_only = on;
    view.setErrorsOnly(on);
    writeUrl();
    updateUi();
  },
});
view.setErrorsOnly(state.errors_only);

const plugins = new PluginsView($t('plugins-view'), { onPlugins });

const timebar = new TimeBar({
  onChange: (w) => {
    state.window = w;
    writeUrl();
    conn.subscribe();
  },
  onCompare: (on) => {
    state.compare = on;
    writeUrl();
    loadCompare();
  },
});
timebar.restore({ ...(state.window || {}), compare: state.compare });

// Compare mode: the diff of the window shown against the one before it,
// drawn over the window's map. Answers to older requests are ignored.
let compareAsked = 0;
let compareDiff = null;
async function loadCompare() {
  const ask = ++compareAsked;
  const w = applied?.from ? { from: Number(applied.from), to: Number(applied.to) } : null;
  if (!state.compare || !w) {
    compareDiff = null;
    view.setCompare(null);
    updateUi();
    return;
  }
  const span = w.to - w.from;
  const q = new URLSearchParams({ map: applied.map, group_by: applied.group_by, before: `${w.from - span},${w.from}`, after: `${w.from},${w.to}` });
  if (applied.filter) q.set('filter', applied.filter);
  try {
    const r = await apiFetch(`api/diff?${q}`, { cache: 'no-store' });
    const diff = await r.json();
    if (ask !== compareAsked) return;
    compareDiff = r.ok ? diff : null;
    view.setCompare(compareDiff);
  } catch {
    if (ask === compareAsked) view.setCompare(null);
  }
  updateUi();
}

function setHidden(kind, set) {
  state.hidden[kind] = set;
  view.setHidden(kind, set);
  writeUrl();
  updateUi();
}
for (const k of ['ns', 'node', 'proto']) view.setHidden(k, state.hidden[k]);

detailsEl.addEventListener('click', (ev) => {
  const t = ev.target.closest('[data-action], [data-edge-id], [data-node-id]');
  if (!t) return;
  ev.preventDefault();
  if (t.dataset.action === 'close') view.clearSelection();
  else if (t.dataset.edgeId) view.selectEdge(t.dataset.edgeId);
  else if (t.dataset.nodeId) view.selectNode(t.dataset.nodeId);
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && !$t('settings-dialog').open && document.activeElement?.tagName !== 'INPUT') view.clearSelection();
});

// Hidden tabs give sigma a zero-sized container; it needs telling when the
// map becomes visible again or the window changes.
new ResizeObserver(() => {
  view.sigma.resize();
  view.sigma.refresh();
}).observe($t('graph'));

// ---- UI refresh -------------------------------------------------------

let uiTimer = null;
function scheduleUi() {
  if (uiTimer === null) uiTimer = setTimeout(updateUi, 60);
}

let bannerDismissed = false;

function updateUi() {
  clearTimeout(uiTimer);
  uiTimer = null;
  const census = view.census();
  const protos = new Map();
  if (state.map === 'l4') for (const m of Object.values(L4_META)) protos.set(m.protocol, { ...m, count: 0 });
  else for (const m of legendMeta.values()) protos.set(m.protocol, { ...m, count: 0 });
  for (const [p, n] of census.protos) protos.set(p, { ...(protoInfo(p) || { protocol: p, color: 'var(--muted)' }), protocol: p, count: n });
  legend.update({ protocols: [...protos.values()], ns: census.ns, nodes: census.nodes, hidden: state.hidden, errorsOnly: state.errors_only, map: view.style.map, comparing: !!compareDiff });

  const n = view.graph.order;
  const e = view.graph.size;
  const vn = view.visibleNodeIds().length;
  const ve = view.visibleEdgeIds().length;
  const hidden = n - vn + (e - ve);
  $t('map-stats').innerHTML =
    `<span data-testid="stat-nodes">${fmtCount(vn)}${vn !== n ? ` / ${fmtCount(n)}` : ''}</span> nodes · ` +
    `<span data-testid="stat-edges">${fmtCount(ve)}${ve !== e ? ` / ${fmtCount(e)}` : ''}</span> edges` +
    (hidden ? ' <span class="muted">(some hidden)</span>' : '') +
    (applied ? `<br>showing ${escapeHtml(applied.map.toUpperCase())} by ${escapeHtml(applied.group_by)}${applied.filter ? ` · <span class="mono">${escapeHtml(applied.filter)}</span>` : ''}` : '') +
    (windowShown ? `<br><span data-testid="window-shown">history ${fmtCount(windowShown.secs ?? windowShown.to - windowShown.from)} s at ${fmtCount(windowShown.resolution_secs)} s steps</span>` : '') +
    (compareDiff ? `<br><span data-testid="compare-stats">${fmtCount(compareDiff.added.length)} added · ${fmtCount(compareDiff.removed.length)} removed · ${fmtCount(compareDiff.changed.length)} changed</span>` : '');

  const banner = $t('large-map-banner');
  const cut = totals && totals.edges > totals.edges_shown;
  const large = applied && applied.group_by === 'pod' && (n > LARGE_MAP || cut) && !bannerDismissed;
  banner.hidden = !large;
  if (large) {
    banner.querySelector('.banner-text').textContent = cut
      ? `Showing the ${fmtCount(totals.edges_shown)} busiest of ${fmtCount(totals.edges)} connections (${fmtCount(totals.nodes)} workloads). Group by namespace for the whole picture?`
      : `${fmtCount(n)} nodes is a lot to draw. Group by namespace for an overview?`;
  }
  $t('map-totals').hidden = !cut;
  if (cut) $t('map-totals').textContent = `busiest ${fmtCount(totals.edges_shown)} of ${fmtCount(totals.edges)} edges`;
  $t('map-empty').hidden = !(ready() && n === 0);
  if (selection) renderDetails(detailsEl, selection, view, protoInfo, detail);
}

// An edge as the details panel shows it: the feed's summary, completed by
// the last full answer for it.
function fullEdge(id) {
  const e = view.edge(id);
  if (!e) return null;
  return detail?.id === id && detail.edge ? { ...e, ...detail.edge } : e;
}

// ---- controls ---------------------------------------------------------

function syncControls() {
  for (const b of document.querySelectorAll('[data-map]')) b.setAttribute('aria-pressed', String(b.dataset.map === state.map));
  $t('group-by').value = state.group_by;
}

function change(patch) {
  const before = JSON.stringify(subscription());
  Object.assign(state, patch);
  view.setStyle(visuals());
  syncControls();
  writeUrl();
  if (JSON.stringify(subscription()) !== before) conn.subscribe();
  scheduleUi();
}

for (const b of document.querySelectorAll('[data-map]')) b.addEventListener('click', () => change({ map: b.dataset.map }));
$t('group-by').addEventListener('change', (ev) => change({ group_by: ev.target.value }));

const filterInput = $t('filter-input');
filterInput.value = state.filter;
$t('filter-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = filterInput.value.trim();
  // Re-submitting the same text retries it (e.g. after an error).
  if (f === state.filter) conn.subscribe();
  change({ filter: f });
});
filterInput.addEventListener('input', () => {
  if (filterInput.value.trim() === (applied?.filter ?? '')) showFilterError(null);
});

function showFilterError(err, filter) {
  const el = $t('filter-error');
  if (!err) {
    el.hidden = true;
    el.textContent = '';
    filterInput.removeAttribute('aria-invalid');
    return;
  }
  filterInput.setAttribute('aria-invalid', 'true');
  el.hidden = false;
  const pos = Number.isInteger(err.position) ? err.position : null;
  let html = `<span class="msg">${escapeHtml(err.error || 'invalid filter')}</span>`;
  if (pos !== null && filter) {
    const at = Math.min(Math.max(pos, 0), filter.length);
    html +=
      `<code class="caret" data-position="${at}">${escapeHtml(filter.slice(0, at))}<mark>${escapeHtml(filter.slice(at, at + 1) || ' ')}</mark>` +
      `${escapeHtml(filter.slice(at + 1))}</code>`;
  }
  html += applied ? '<span class="muted small">The previous filter is still applied.</span>' : '';
  el.innerHTML = html;
}

$t('large-map-group-ns').addEventListener('click', () => change({ group_by: 'namespace' }));
$t('large-map-dismiss').addEventListener('click', () => {
  bannerDismissed = true;
  updateUi();
});

for (const b of document.querySelectorAll('[data-zoom]')) b.addEventListener('click', () => view.zoom(Number(b.dataset.zoom)));

// Settings dialog: edits a copy; Apply commits it as one subscription.
const dialog = $t('settings-dialog');
const form = dialog.querySelector('form');
$t('settings-button').addEventListener('click', () => {
  form.elements.map.value = state.map;
  form.elements.group_by.value = state.group_by;
  form.elements.mode.value = state.mode;
  form.elements.bandwidth.checked = state.bandwidth;
  form.elements.include_request.checked = state.include_request;
  form.elements.include_response.checked = state.include_response;
  syncBandwidth();
  dialog.showModal();
});
function syncBandwidth() {
  const on = form.elements.bandwidth.checked;
  form.elements.include_request.disabled = !on;
  form.elements.include_response.disabled = !on;
}
form.elements.bandwidth.addEventListener('change', syncBandwidth);
dialog.addEventListener('close', () => {
  if (dialog.returnValue !== 'apply') return;
  change({
    map: form.elements.map.value,
    group_by: form.elements.group_by.value,
    mode: form.elements.mode.value,
    bandwidth: form.elements.bandwidth.checked,
    include_request: form.elements.include_request.checked,
    include_response: form.elements.include_response.checked,
  });
});

// Tabs
function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll('[data-tab]')) b.setAttribute('aria-selected', String(b.dataset.tab === tab));
  $t('map-view').hidden = tab !== 'map';
  $t('plugins-view').hidden = tab !== 'plugins';
  for (const el of document.querySelectorAll('[data-map-only]')) el.classList.toggle('invisible', tab !== 'map');
  if (tab === 'plugins') plugins.show();
  else plugins.hide();
  writeUrl();
}
for (const b of document.querySelectorAll('[data-tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));

// Theme: auto (follow the OS) -> light -> dark.
const media = matchMedia('(prefers-color-scheme: dark)');
function themeMode() {
  try {
    const t = localStorage.getItem('trawl.theme');
    return t === 'light' || t === 'dark' ? t : 'auto';
  } catch {
    return 'auto';
  }
}
function applyTheme() {
  const mode = themeMode();
  const eff = mode === 'auto' ? (media.matches ? 'dark' : 'light') : mode;
  document.documentElement.dataset.theme = eff;
  view.setTheme(eff);
  const b = $t('theme-toggle');
  b.textContent = { auto: '◐', light: '☀', dark: '☾' }[mode];
  b.title = `Theme: ${mode} (click to change)`;
  b.dataset.mode = mode;
}
$t('theme-toggle').addEventListener('click', () => {
  const next = { auto: 'light', light: 'dark', dark: 'auto' }[themeMode()];
  try {
    if (next === 'auto') localStorage.removeItem('trawl.theme');
    else localStorage.setItem('trawl.theme', next);
  } catch {
    /* private mode: theme just does not persist */
  }
  applyTheme();
});
media.addEventListener('change', applyTheme);

// ---- live feed --------------------------------------------------------

function ready() {
  return applied !== null && conn.pending.length === 0;
}

function setConn(s, text) {
  const el = $t('conn-status');
  el.dataset.state = s;
  el.textContent = text;
}

const conn = {
  ws: null,
  // Subscriptions sent and not yet answered: each is answered by exactly
  // one snapshot (accepted) or one error (rejected), in order.
  pending: [],
  attempts: 0,
  timer: null,

  async connect() {
    clearTimeout(this.timer);
    if (this.adoptEarly()) return;
    // A refused WebSocket tells the page nothing of why: ask the API first
    // (it prompts for a token on 401).
    await ensureAccess();
    const url = new URL('api/ws', document.baseURI);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    setConn('connecting', this.attempts ? 'reconnecting…' : 'connecting…');
    let ws;
    try {
      ws = new WebSocket(url, wsProtocols());
    } catch {
      this.retry();
      return;
    }
    this.attach(ws);
  },

  // index.html opened the feed before the scripts loaded. Take it over if
  // it asked for what this page would ask for; otherwise start afresh.
  adoptEarly() {
    const early = window.__trawlEarly;
    window.__trawlEarly = null;
    if (!early || early.ws.readyState > WebSocket.OPEN) return false;
    const want = subscription();
    const asked = early.sent && { ...DEFAULTS, ...early.sent };
    const same = asked && Object.keys(want).every((k) => want[k] === asked[k]);
    if (early.ws.readyState === WebSocket.CONNECTING && !early.sent) {
      setConn('connecting', 'connecting…');
      this.attach(early.ws);
      return true;
    }
    if (!same) {
      early.ws.close();
      return false;
    }
    this.attach(early.ws, true);
    setConn('live', 'live');
    this.pending = [want];
    lastSeq = 0;
    for (const data of early.messages) this.receive(data);
    return true;
  },

  attach(ws, open = false) {
    this.ws = ws;
    if (!open) {
      ws.onopen = () => {
        performance.mark('trawl:ws-open');
        setConn('live', 'live');
        this.pending = [];
        lastSeq = 0;
        this.subscribe();
      };
    }
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.pending = [];
      this.retry();
    };
  },

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    onMessage(msg);
  },

  retry() {
    const delay = Math.min(10000, 500 * 2 ** this.attempts) * (0.8 + 0.4 * Math.random());
    this.attempts++;
    setConn('down', `disconnected — retrying in ${Math.ceil(delay / 1000)} s`);
    this.timer = setTimeout(() => this.connect(), delay);
  },

  askDetail(id) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    detailAsked = Date.now();
    this.ws.send(JSON.stringify({ type: 'detail', id }));
  },

  subscribe() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const sub = subscription();
    this.pending.push(sub);
    this.ws.send(JSON.stringify(sub));
  },
};

function onMessage(msg) {
  if (msg.type === 'snapshot') {
    performance.mark('trawl:snapshot-parsed');
    const sub = conn.pending.shift() || applied || subscription();
    const snap = msg.map || { nodes: [], edges: [], legend: [] };
    for (const m of snap.legend || []) if (m && m.protocol) legendMeta.set(String(m.protocol).toLowerCase(), m);
    // A new grouping, map or filter is a new picture: lay it out afresh and
    // fit the camera to it (live updates to the same view keep positions).
    const relayout = !applied || ['group_by', 'map', 'filter'].some((k) => applied[k] !== sub[k]);
    view.setStyle({ map: sub.map, group_by: sub.group_by, ...visuals() });
    if (snap.health) {
      view.setHealthThresholds(snap.health);
      legend.setHealthThresholds(view.healthThresholds);
    }
    view.loadSnapshot(snap, relayout);
    performance.mark('trawl:snapshot-loaded');
    totals = snap.totals || null;
    applied = sub;
    windowShown = snap.window || null;
    if (state.compare || compareDiff) loadCompare();
    conn.attempts = 0;
    if (Number.isFinite(msg.seq)) lastSeq = msg.seq;
    counters.snapshots++;
    if (sub.filter === filterInput.value.trim()) showFilterError(null);
    updateUi();
  } else if (msg.type === 'delta') {
    if (Number.isFinite(msg.seq) && msg.seq <= lastSeq) return;
    if (Number.isFinite(msg.seq)) lastSeq = msg.seq;
    view.applyDelta(msg);
    if (msg.totals) totals = msg.totals;
    counters.deltas++;
    // Keep an open edge's details fresh, once a second at most.
    if (selection?.type === 'edge' && Date.now() - detailAsked > 1000) conn.askDetail(selection.id);
    scheduleUi();
  } else if (msg.type === 'detail') {
    if (selection?.type === 'edge' && selection.id === msg.id) {
      detail = msg;
      renderDetails(detailsEl, selection, view, protoInfo, detail);
    }
  } else if (msg.type === 'error') {
    const sub = conn.pending.shift();
    counters.errors++;
    lastError = msg;
    showFilterError(msg, sub ? sub.filter : filterInput.value.trim());
    if (sub && applied) {
      // The server kept the old subscription; so do we.
      state.filter = applied.filter;
      state.window = applied.from ? { from: Number(applied.from), to: Number(applied.to) } : null;
      timebar.restore({ ...(state.window || {}), compare: state.compare });
      writeUrl();
    } else if (sub && !applied) {
      // Nothing is subscribed yet (e.g. a shared URL with a bad filter):
      // show the unfiltered map and leave the error up.
      state.filter = '';
      writeUrl();
      conn.subscribe();
    }
    updateUi();
  }
}

// ---- test hooks -------------------------------------------------------

window.__trawl = {
  get ready() {
    return ready();
  },
  get lastSeq() {
    return lastSeq;
  },
  get snapshots() {
    return counters.snapshots;
  },
  get deltas() {
    return counters.deltas;
  },
  get errors() {
    return counters.errors;
  },
  get lastError() {
    return lastError;
  },
  get applied() {
    return applied && { ...applied };
  },
  get droppedEdges() {
    return view.droppedEdges;
  },
  state: () => JSON.parse(JSON.stringify({ ...state, hidden: Object.fromEntries(Object.entries(state.hidden).map(([k, v]) => [k, [...v]])) })),
  nodeCount: () => view.graph.order,
  edgeCount: () => view.graph.size,
  visibleNodeCount: () => view.visibleNodeIds().length,
  visibleEdgeCount: () => view.visibleEdgeIds().length,
  nodeIds: () => view.nodeIds(),
  edgeIds: () => view.edgeIds(),
  visibleNodeIds: () => view.visibleNodeIds(),
  visibleEdgeIds: () => view.visibleEdgeIds(),
  node: (id) => view.node(id),
  edge: (id) => fullEdge(id),
  get totals() {
    return totals && { ...totals };
  },
  edgeProtocols: () => view.edgeIds().map((id) => edgeProtocol(view.edge(id))),
  edgeHealth: (id) => view.edgeHealth(id),
  compareStatus: (id) => view.compareStatus(id),
  // The colour sigma draws an edge in (null: not drawn by sigma).
  edgeDisplayColor: (id) => {
    const d = view.sigma.getEdgeDisplayData(id);
    return d && !d.hidden ? d.color : null;
  },
  compareReasons: (id) => view.compareReasons(id),
  get window() {
    return windowShown && { ...windowShown };
  },
  timeStep: (dir) => timebar.step(dir),
  nodeHealth: (id) => view.nodeHealth(id),
  labelledEdgeIds: () => view.labelledEdgeIds(),
  setLabelsAtFit: (n) => view.setLabelsAtFit(n),
  edgeSize: (id) => (view.graph.hasEdge(id) ? view.graph.getEdgeAttribute(id, 'size') : null),
  zoomBy: (ratio) => view.sigma.getCamera().setState({ ratio }),
  edgeColor: (id) => (view.graph.hasEdge(id) ? view.graph.getEdgeAttribute(id, 'color') : null),
  nodePosition: (id) => (view.graph.hasNode(id) ? { x: view.graph.getNodeAttribute(id, 'x'), y: view.graph.getNodeAttribute(id, 'y') } : null),
  // Same path as a click on the canvas.
  selectEdge: (id) => view.selectEdge(id),
  selectNode: (id) => view.selectNode(id),
  clearSelection: () => view.clearSelection(),
  selection: () => selection && { ...selection },
  // Page coordinates of an edge's midpoint / a node, for real mouse clicks.
  edgeClientPoint: (id, at = 0.5) => {
    if (!view.graph.hasEdge(id)) return null;
    const [s, t] = view.graph.extremities(id);
    const a = clientPoint(s);
    const b = clientPoint(t);
    return { x: a.x + (b.x - a.x) * at, y: a.y + (b.y - a.y) * at };
  },
  nodeClientPoint: (id) => (view.graph.hasNode(id) ? clientPoint(id) : null),
  // Painted pixels on one of sigma's WebGL layers ('nodes', 'edges'):
  // proves the map was really drawn, not just loaded. With `redraw` sigma
  // renders synchronously first (a WebGL buffer is certainly readable in
  // the task that drew it); without, the readback sees what the browser
  // last presented, and costs no extra render.
  drawnPixels: (layer = 'nodes', redraw = true) => {
    if (redraw) view.sigma.refresh();
    const src = view.sigma.getCanvases()[layer];
    if (!src || !src.width || !src.height) return 0;
    const c = document.createElement('canvas');
    c.width = src.width;
    c.height = src.height;
    const ctx = c.getContext('2d');
    ctx.drawImage(src, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  },
};

function clientPoint(node) {
  const p = view.sigma.graphToViewport(view.graph.getNodeAttributes(node));
  const r = $t('graph').getBoundingClientRect();
  return { x: r.left + p.x, y: r.top + p.y };
}

// ---- start --------------------------------------------------------------

syncControls();
applyTheme();
showTab(state.tab);
writeUrl();
updateUi();
plugins.load();
new LossWatch($t('loss-warning')).start();
conn.connect();
