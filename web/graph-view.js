// The map itself: a graphology graph rendered by sigma (WebGL).
//
// Snapshots that change the grouping build a fresh graph and layout; every
// other snapshot and every delta is applied in place with add/merge/drop so
// sigma only re-processes what changed and nodes keep their positions.
// Visibility (legend filters) and selection are expressed through sigma's
// reducers, so they never touch the graph data.

import { Layout } from './layout.js';
import { fmtBytes, fmtCount, fmtRate, hashColor } from './format.js';

import { COMPARE_COLORS, changeKind, reasonText } from './compare.js';

const { Graph } = window.graphology;
const Sigma = window.Sigma;

export const L4_COLORS = { tcp: '#7b8794', udp: '#a0907c' };
// Kiali's defaults: an L7 edge is degraded from 0.1 % errors and failing
// from 20 %. Health is drawn as a halo under the edge (and a ring around
// the server it points at), so the edge keeps its protocol's colour.
export const HEALTH_THRESHOLDS = { degraded: 0.001, failing: 0.2, latency_degraded_ms: 1000, latency_failing_ms: 5000 };
export const HEALTH_COLORS = { degraded: '#f59e0b', failing: '#e02424' };
const HEALTH_RANK = { ok: 0, degraded: 1, failing: 2 };

// 'ok', 'degraded' or 'failing', by the edge's error rate or its p99
// latency, whichever is worse (L7 edges only). The feed's summaries carry
// `latency_p99_us`; full edges `latency_us.p99`.
export function edgeHealth(e, t = HEALTH_THRESHOLDS) {
  if (!e || !e.protocol || !e.requests) return 'ok';
  const ratio = (e.errors || 0) / e.requests;
  const p99 = Number(e.latency_p99_us ?? e.latency_us?.p99 ?? 0) / 1000;
  if (ratio >= t.failing || (t.latency_failing_ms > 0 && p99 >= t.latency_failing_ms)) return 'failing';
  if (ratio >= t.degraded || (t.latency_degraded_ms > 0 && p99 >= t.latency_degraded_ms)) return 'degraded';
  return 'ok';
}
const EXTERNAL_GROUP = '~external';
const EXTERNAL_COLOR = '#9aa5b1';
// Edge labels turn into noise past this many edges.
const EDGE_LABEL_LIMIT = 250;
// Labels give way: at the fitted zoom only the heaviest edges keep theirs;
// each halving of the zoom ratio shows twice as many.
const EDGE_LABELS_AT_FIT = 12;

const THEMES = {
  light: { label: '#1f2933', edgeLabel: '#52606d', dim: '#dde2e8', hoverBg: '#ffffff', groupText: '#52606d' },
  dark: { label: '#e4e7eb', edgeLabel: '#9aa5b1', dim: '#2f3540', hoverBg: '#1f2430', groupText: '#9aa5b1' },
};

const NODE_SIZES = { pod: 7, service: 8, external: 6, namespace: 13, node: 13 };

export function nodeNamespace(n) {
  return n.namespace || (n.kind === 'namespace' ? n.name : '') || '';
}

export function nodeK8sNode(n) {
  return n.node || (n.kind === 'node' ? n.name : '') || '';
}

export function edgeProtocol(e) {
  return e.protocol || e.l4 || 'unknown';
}

function newGraph() {
  return new Graph({ type: 'directed', multi: true, allowSelfLoops: true });
}

export class GraphView {
  constructor(container, { onSelect, protoInfo }) {
    this.container = container;
    this.onSelect = onSelect;
    this.protoInfo = protoInfo;
    this.style = { map: 'l4', group_by: 'pod', mode: 'cumulative', bandwidth: true, include_request: true, include_response: true };
    this.hidden = { ns: new Set(), node: new Set(), proto: new Set() };
    this.errorsOnly = false;
    this.healthThresholds = HEALTH_THRESHOLDS;
    this.selection = null;
    this.themeName = 'light';
    this.theme = THEMES.light;
    this.droppedEdges = 0;
    // Compare mode: edge id -> {status, reasons}; null when off.
    this.compare = null;
    this.bbox = null;
    this.graph = newGraph();
    this.layout = new Layout();

    this.sigma = new Sigma(this.graph, container, {
      enableEdgeEvents: true,
      defaultEdgeType: 'arrow',
      renderEdgeLabels: true,
      labelFont: 'system-ui, -apple-system, "Segoe UI", sans-serif',
      labelSize: 12,
      labelWeight: '500',
      edgeLabelFont: 'system-ui, -apple-system, "Segoe UI", sans-serif',
      edgeLabelSize: 10,
      labelColor: { color: this.theme.label },
      edgeLabelColor: { color: this.theme.edgeLabel },
      labelRenderedSizeThreshold: 5,
      // Pods of one namespace sit close together; the default density
      // would label only one of them.
      labelDensity: 2.5,
      labelGridCellSize: 60,
      zIndex: true,
      stagePadding: 48,
      minCameraRatio: 0.02,
      maxCameraRatio: 20,
      allowInvalidContainer: true,
      defaultDrawNodeHover: (ctx, data, settings) => this.#drawHover(ctx, data, settings),
      nodeReducer: (n, attrs) => this.#reduceNode(n, attrs),
      edgeReducer: (e, attrs) => this.#reduceEdge(e, attrs),
    });

    // Group halos and self-loops live on a 2D layer under the edges: sigma
    // has no primitive for either.
    this.overlay = this.sigma.createCanvas('groups', { beforeLayer: 'edges', style: { pointerEvents: 'none' } });
    this.sigma.on('afterRender', () => this.#drawOverlay());
    // Which edges keep a label depends on the zoom: re-run the reducers
    // when the budget changes (a power of two of the zoom ratio).
    this.labelRank = new Map();
    this.labelsAtFit = EDGE_LABELS_AT_FIT;
    this.labelBudget = EDGE_LABELS_AT_FIT;
    this.sigma.getCamera().on('updated', (cam) => {
      const budget = this.#labelBudgetAt(cam.ratio);
      if (budget !== this.labelBudget && this.sigma.getSetting('renderEdgeLabels')) {
        this.labelBudget = budget;
        this.sigma.refresh({ skipIndexation: true });
      }
    });

    this.sigma.on('clickNode', ({ node }) => this.selectNode(node));
    this.sigma.on('clickEdge', ({ edge }) => this.selectEdge(edge));
    this.sigma.on('clickStage', () => this.clearSelection());
    this.sigma.on('enterEdge', ({ edge, event }) => {
      container.classList.add('pointer');
      this.#showTip(edge, event);
    });
    this.sigma.on('leaveEdge', () => {
      container.classList.remove('pointer');
      this.#showTip(null);
    });
    this.sigma.on('enterNode', () => container.classList.add('pointer'));
    this.sigma.on('leaveNode', () => container.classList.remove('pointer'));
  }

  // ---- data ----------------------------------------------------------

  // relayout: build a new graph and layout (grouping changed, or first
  // snapshot). Otherwise reconcile in place so nothing already drawn moves.
  loadSnapshot(snap, relayout) {
    const nodes = [...(snap.nodes || [])].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const edges = snap.edges || [];
    this.droppedEdges = 0;
    if (relayout) {
      const g = newGraph();
      this.layout.build(nodes.map((n) => ({ id: n.id, group: this.#groupKey(n) })));
      for (const n of nodes) {
        const p = this.layout.get(n.id);
        g.addNode(n.id, { x: p.x, y: p.y, ...this.#nodeVisual(n), raw: n });
      }
      for (const e of edges) {
        if (!g.hasNode(e.source) || !g.hasNode(e.target) || g.hasEdge(e.id)) {
          this.droppedEdges++;
          continue;
        }
        g.addEdgeWithKey(e.id, e.source, e.target, { ...this.#edgeVisual(e), raw: e });
      }
      this.graph = g;
      // Label settings before setGraph, whose refresh draws at once: edge
      // labels on a big map cost a second of text drawing for nothing.
      this.#updateEdgeLabelSetting();
      // The bbox goes in first: setGraph's refresh computes the
      // normalisation from it.
      this.#fitBBox(true);
      performance.mark('trawl:graph-built');
      // When the new map is first drawn (first_paint.mjs reads these).
      this.sigma.once('beforeRender', () => performance.mark('trawl:render-start'));
      this.sigma.once('afterRender', () => performance.mark('trawl:render-end'));
      const resumePicking = this.#pauseEdgePicking();
      this.sigma.setGraph(g);
      this.sigma.getCamera().setState({ x: 0.5, y: 0.5, ratio: 1, angle: 0 });
      this.labelBudget = this.#labelBudgetAt(1);
      performance.mark('trawl:graph-set');
      // Edges become clickable a frame after the map is on screen.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        resumePicking();
        this.sigma.scheduleRender();
      }));
    } else {
      const keepN = new Set(nodes.map((n) => n.id));
      const keepE = new Set(edges.map((e) => e.id));
      for (const id of this.graph.edges()) if (!keepE.has(id)) this.graph.dropEdge(id);
      for (const id of this.graph.nodes()) {
        if (!keepN.has(id)) {
          this.graph.dropNode(id);
          this.layout.release(id);
        }
      }
      for (const n of nodes) this.#upsertNode(n, true);
      for (const e of edges) this.#upsertEdge(e, true);
      if (this.#fitBBox(false)) this.sigma.refresh({ schedule: true });
    }
    this.#updateEdgeLabelSetting();
    this.#keepSelectionValid();
  }

  applyDelta(d) {
    const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    for (const n of [...(d.nodes_added || [])].sort(byId)) this.#upsertNode(n, true);
    for (const n of d.nodes_changed || []) this.#upsertNode(n, false);
    for (const e of d.edges_added || []) this.#upsertEdge(e, true);
    for (const e of d.edges_changed || []) this.#upsertEdge(e, false);
    for (const id of d.edges_removed || []) if (this.graph.hasEdge(id)) this.graph.dropEdge(id);
    for (const id of d.nodes_removed || []) {
      if (this.graph.hasNode(id)) this.graph.dropNode(id);
      this.layout.release(id);
    }
    if ((d.nodes_added || []).length && this.#fitBBox(false)) this.sigma.refresh({ schedule: true });
    if (['nodes_added', 'nodes_removed', 'edges_added', 'edges_removed'].some((k) => (d[k] || []).length)) this.#updateEdgeLabelSetting();
    else if ((d.edges_changed || []).length) this.#rankEdgeLabels();
    this.#keepSelectionValid();
  }

  #upsertNode(n, added) {
    if (this.graph.hasNode(n.id)) {
      const raw = { ...this.graph.getNodeAttribute(n.id, 'raw'), ...n };
      this.graph.mergeNodeAttributes(n.id, { ...this.#nodeVisual(raw), raw });
      return;
    }
    if (!added && !n.name) return;
    const p = this.layout.place(n.id, this.#groupKey(n));
    this.graph.addNode(n.id, { x: p.x, y: p.y, ...this.#nodeVisual(n), raw: n });
  }

  #upsertEdge(e, added) {
    if (this.graph.hasEdge(e.id)) {
      const raw = { ...this.graph.getEdgeAttribute(e.id, 'raw'), ...e };
      // A removed edge drawn by compare mode is real again once the map has it.
      this.graph.mergeEdgeAttributes(e.id, { ...this.#edgeVisual(raw), raw, ghost: false });
      return;
    }
    if (!this.graph.hasNode(e.source) || !this.graph.hasNode(e.target)) {
      if (added) this.droppedEdges++;
      return;
    }
    this.graph.addEdgeWithKey(e.id, e.source, e.target, { ...this.#edgeVisual(e), raw: e });
  }

  // ---- style -----------------------------------------------------------

  setStyle(style) {
    this.style = { ...this.style, ...style };
    try {
      this.graph.updateEachEdgeAttributes((_e, attrs) => ({ ...attrs, ...this.#edgeVisual(attrs.raw) }), {
        attributes: ['size', 'color', 'label'],
      });
    } catch {
      // sigma's skip-indexation repaint fails for an edge added since the
      // last frame; the attributes are already set, so repaint everything.
      this.sigma.refresh();
    }
  }

  setTheme(name) {
    this.themeName = name === 'dark' ? 'dark' : 'light';
    this.theme = THEMES[this.themeName];
    this.sigma.setSetting('labelColor', { color: this.theme.label });
    this.sigma.setSetting('edgeLabelColor', { color: this.theme.edgeLabel });
  }

  // Legend colours arrived or changed (first L7 snapshot, plugins list).
  recolorEdges() {
    this.setStyle({});
  }

  #groupKey(n) {
    if (n.kind === 'external') return EXTERNAL_GROUP;
    if (this.style.group_by === 'node') return nodeK8sNode(n) || EXTERNAL_GROUP;
    return nodeNamespace(n) || EXTERNAL_GROUP;
  }

  #nodeVisual(n) {
    let color;
    if (n.kind === 'external') color = EXTERNAL_COLOR;
    else if (n.kind === 'node') color = hashColor('node:' + nodeK8sNode(n), 48);
    else color = hashColor(nodeNamespace(n) || n.id);
    return { label: n.name || n.id, size: NODE_SIZES[n.kind] || 7, color };
  }

  // The number an edge's width and label stand for, given the settings.
  // The server weighs edges for the subscription (bytes or packets or
  // requests, totals or rates, request and response sizes or not).
  edgeWeight(e) {
    const s = this.style;
    const unit = s.bandwidth ? 'B' : e.protocol ? 'req' : 'pkt';
    return { value: Number(e.weight) || 0, unit, rate: s.mode === 'rate' };
  }

  #edgeVisual(e) {
    const proto = edgeProtocol(e);
    const w = this.edgeWeight(e);
    const size = Math.min(14, 1 + 1.5 * Math.log10(1 + Math.max(0, w.value)));
    const color = e.protocol ? this.protoInfo(proto)?.color || hashColor(proto, 45) : L4_COLORS[proto] || L4_COLORS.tcp;
    let label;
    if (w.unit === 'B') label = w.rate ? fmtRate(w.value, 'B') : fmtBytes(w.value);
    else label = w.rate ? fmtRate(w.value, w.unit) : `${fmtCount(w.value)} ${w.unit}`;
    // An edge of one virtual host says which.
    if (e.host) label = `${e.host} · ${label}`;
    // Read as TLS plaintext: encrypted on the wire.
    if (e.tls_requests) label = `🔒 ${label}`;
    return { size, color, label, health: edgeHealth(e, this.healthThresholds), type: e.source === e.target ? 'line' : 'arrow' };
  }

  // Leaves the edge picking pass out of the next renders until the
  // returned function is called. In software GL (SwiftShader) that pass
  // costs about as much as drawing the edges, so a new map's first frame
  // goes without it. Reaches into sigma's programs: if they are not shaped
  // as expected (another sigma version), nothing is paused.
  #pauseEdgePicking() {
    const paused = [];
    const visit = (p) => {
      if (!p || typeof p !== 'object') return;
      if (Array.isArray(p.programs)) p.programs.forEach(visit);
      if (p.pickProgram) {
        paused.push([p, p.pickProgram]);
        p.pickProgram = null;
      }
    };
    Object.values(this.sigma.edgePrograms || {}).forEach(visit);
    return () => {
      for (const [p, pick] of paused) if (!p.pickProgram) p.pickProgram = pick;
      paused.length = 0;
    };
  }

  #labelBudgetAt(ratio) {
    const halvings = Math.max(0, Math.round(-Math.log2(Math.max(ratio, 1e-3))));
    return this.labelsAtFit * 2 ** Math.min(halvings, 10);
  }

  // How many edges keep their label at the fitted zoom (tests set it low
  // to see labels give way on a small map).
  setLabelsAtFit(n) {
    this.labelsAtFit = n;
    this.labelBudget = this.#labelBudgetAt(this.sigma.getCamera().ratio);
    this.sigma.refresh({ skipIndexation: true });
  }

  // Edges by weight, heaviest first: the first `labelBudget` keep labels.
  #rankEdgeLabels() {
    const edges = this.graph.mapEdges((e, a) => [e, a.size || 0]);
    edges.sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
    this.labelRank = new Map(edges.map(([e], i) => [e, i]));
  }

  #updateEdgeLabelSetting() {
    this.#rankEdgeLabels();
    const want = this.graph.size <= EDGE_LABEL_LIMIT;
    if (this.sigma.getSetting('renderEdgeLabels') !== want) this.sigma.setSetting('renderEdgeLabels', want);
    // Dense labels help a small map (pods of a namespace sit close) and
    // bury a big one.
    const small = this.graph.order <= 150;
    const density = small ? 2.5 : 0.5;
    if (this.sigma.getSetting('labelDensity') !== density) {
      this.sigma.setSetting('labelDensity', density);
      this.sigma.setSetting('labelGridCellSize', small ? 60 : 120);
    }
  }

  // ---- visibility ------------------------------------------------------

  isNodeHidden(raw) {
    const ns = nodeNamespace(raw);
    const k8s = nodeK8sNode(raw);
    return (ns !== '' && this.hidden.ns.has(ns)) || (k8s !== '' && this.hidden.node.has(k8s));
  }

  isEdgeHidden(e) {
    const g = this.graph;
    const raw = g.getEdgeAttribute(e, 'raw');
    if (this.hidden.proto.has(edgeProtocol(raw))) return true;
    if (this.errorsOnly && edgeHealth(raw, this.healthThresholds) === 'ok') return true;
    return this.isNodeHidden(g.getNodeAttribute(g.source(e), 'raw')) || this.isNodeHidden(g.getNodeAttribute(g.target(e), 'raw'));
  }

  // The server's thresholds (`--health`), sent with each snapshot.
  setHealthThresholds(t) {
    if (!t || !(t.degraded > 0) || !(t.failing > t.degraded)) return;
    const next = { ...HEALTH_THRESHOLDS, ...t };
    if (JSON.stringify(next) === JSON.stringify(this.healthThresholds)) return;
    this.healthThresholds = next;
    this.graph.forEachEdge((e, a) => this.graph.setEdgeAttribute(e, 'health', edgeHealth(a.raw, this.healthThresholds)));
    this.sigma.refresh();
  }

  // "Errors only": hide every edge whose health is ok.
  setErrorsOnly(on) {
    if (this.errorsOnly === !!on) return;
    this.errorsOnly = !!on;
    this.sigma.refresh();
    this.#keepSelectionValid();
  }

  // Edges whose label is drawn now (visible, and within the label budget
  // or picked out by the selection).
  labelledEdgeIds() {
    if (!this.sigma.getSetting('renderEdgeLabels')) return [];
    return this.graph.filterEdges((e) => {
      const d = this.sigma.getEdgeDisplayData(e);
      return d && !d.hidden && !!d.label;
    });
  }

  // The health of an edge as drawn ('ok', 'degraded', 'failing').
  edgeHealth(id) {
    return this.graph.hasEdge(id) ? edgeHealth(this.graph.getEdgeAttribute(id, 'raw'), this.healthThresholds) : null;
  }

  // The worst health of the visible edges into a node.
  nodeHealth(id) {
    let worst = 'ok';
    if (!this.graph.hasNode(id)) return null;
    this.graph.forEachInEdge(id, (e, a) => {
      const h = edgeHealth(a.raw, this.healthThresholds);
      if (HEALTH_RANK[h] > HEALTH_RANK[worst] && !this.isEdgeHidden(e)) worst = h;
    });
    return worst;
  }

  // kind: 'ns' | 'node' | 'proto'; names: the full new hidden set.
  setHidden(kind, names) {
    const before = new Map();
    this.graph.forEachNode((n, a) => before.set(n, this.isNodeHidden(a.raw)));
    const edgesBefore = new Map();
    this.graph.forEachEdge((e) => edgesBefore.set(e, this.isEdgeHidden(e)));
    this.hidden[kind] = new Set(names);
    const nodes = [];
    this.graph.forEachNode((n, a) => {
      if (before.get(n) !== this.isNodeHidden(a.raw)) nodes.push(n);
    });
    const edges = [];
    this.graph.forEachEdge((e) => {
      if (edgesBefore.get(e) !== this.isEdgeHidden(e)) edges.push(e);
    });
    this.#keepSelectionValid();
    this.#partialRefresh(nodes, edges);
  }

  // Only reducer output changed (no position, size or z-order), which is
  // exactly the case sigma's skipIndexation is for.
  #partialRefresh(nodes, edges) {
    if (!nodes.length && !edges.length) return;
    try {
      this.sigma.refresh({ partialGraph: { nodes, edges }, skipIndexation: true });
    } catch {
      // An item added since the last frame has no program slot yet.
      this.sigma.refresh();
    }
  }

  // ---- selection -------------------------------------------------------

  selectEdge(id) {
    if (!this.graph.hasEdge(id)) return false;
    this.#setSelection({ type: 'edge', id });
    return true;
  }

  selectNode(id) {
    if (!this.graph.hasNode(id)) return false;
    this.#setSelection({ type: 'node', id });
    return true;
  }

  clearSelection() {
    if (this.selection) this.#setSelection(null);
  }

  #setSelection(sel) {
    this.selection = sel;
    // Selection changes z-order and dims everything else: a full refresh.
    this.sigma.refresh();
    this.onSelect(sel);
  }

  #keepSelectionValid() {
    const s = this.selection;
    if (!s) return;
    const exists = s.type === 'edge' ? this.graph.hasEdge(s.id) : this.graph.hasNode(s.id);
    const hidden = exists && (s.type === 'edge' ? this.isEdgeHidden(s.id) : this.isNodeHidden(this.graph.getNodeAttribute(s.id, 'raw')));
    if (!exists || hidden) this.#setSelection(null);
  }

  #reduceNode(n, attrs) {
    if (this.isNodeHidden(attrs.raw)) return { ...attrs, hidden: true, label: '' };
    const s = this.selection;
    if (!s) return attrs;
    const g = this.graph;
    if (s.type === 'node') {
      if (n === s.id) return { ...attrs, highlighted: true, forceLabel: true, zIndex: 2 };
      if (g.areNeighbors(n, s.id)) return { ...attrs, forceLabel: true, zIndex: 1 };
    } else if (g.hasEdge(s.id) && (g.source(s.id) === n || g.target(s.id) === n)) {
      return { ...attrs, highlighted: true, forceLabel: true, zIndex: 2 };
    }
    return { ...attrs, color: this.theme.dim, label: '', zIndex: 0 };
  }

  #reduceEdge(e, attrs) {
    if (this.isEdgeHidden(e)) return { ...attrs, hidden: true };
    if (this.compare) attrs = this.#compareLook(e, attrs);
    const s = this.selection;
    if (!s) return (this.labelRank.get(e) ?? 0) < this.labelBudget ? attrs : { ...attrs, label: '' };
    if (s.type === 'edge' && e === s.id) return { ...attrs, size: attrs.size * 1.3 + 2, zIndex: 2, forceLabel: true };
    if (s.type === 'node') {
      const g = this.graph;
      if (g.source(e) === s.id || g.target(e) === s.id) return { ...attrs, zIndex: 1, forceLabel: true };
    }
    return { ...attrs, color: this.theme.dim, label: '', zIndex: 0 };
  }

  // ---- compare mode ----------------------------------------------------

  // diff: `/api/diff`'s answer (added, removed, changed), or null to end
  // compare mode. Removed edges are drawn (grey, dashed) between the
  // nodes they joined; unchanged ones fade so changes stand out.
  setCompare(diff) {
    for (const id of this.graph.filterEdges((_e, a) => a.ghost)) this.graph.dropEdge(id);
    if (!diff) {
      this.compare = null;
      this.sigma.refresh();
      return;
    }
    const compare = new Map();
    for (const e of diff.added || []) compare.set(e.id, { status: 'added' });
    for (const e of diff.changed || []) compare.set(e.id, { status: changeKind(e.reasons), reasons: e.reasons });
    for (const e of diff.removed || []) {
      compare.set(e.id, { status: 'removed' });
      for (const n of diff.nodes || []) if ((n.id === e.source || n.id === e.target) && !this.graph.hasNode(n.id)) this.#upsertNode(n, true);
      if (!this.graph.hasEdge(e.id) && this.graph.hasNode(e.source) && this.graph.hasNode(e.target)) {
        this.graph.addEdgeWithKey(e.id, e.source, e.target, { ...this.#edgeVisual(e), raw: e, ghost: true });
      }
    }
    this.compare = compare;
    this.sigma.refresh();
  }

  // How an edge reads in compare mode: 'added', 'removed', 'worse',
  // 'changed' or 'same'.
  compareStatus(id) {
    if (!this.compare || !this.graph.hasEdge(id)) return null;
    return this.compare.get(id)?.status || 'same';
  }

  compareReasons(id) {
    return this.compare?.get(id)?.reasons || [];
  }

  #compareLook(e, attrs) {
    const c = this.compare.get(e);
    if (!c) return { ...attrs, color: this.theme.dim, label: '', zIndex: 0 };
    // WebGL draws no dashes: the overlay draws a removed edge instead.
    if (c.status === 'removed') return { ...attrs, hidden: true, color: COMPARE_COLORS.removed };
    const label = c.status === 'added' ? 'new' : (c.reasons || []).map((r) => r.reason.replace(/_/g, ' ')).join(', ');
    return { ...attrs, color: COMPARE_COLORS[c.status], label, zIndex: 2, forceLabel: true };
  }

  #showTip(edge, event) {
    const tip = this.container.parentElement?.querySelector('[data-testid="edge-tip"]');
    if (!tip) return;
    const c = edge && this.compare?.get(edge);
    if (!c) {
      tip.hidden = true;
      return;
    }
    const what = { added: 'New in this window', removed: 'Gone in this window', worse: 'Worse than before', changed: 'Changed' }[c.status];
    tip.textContent = [what, ...(c.reasons || []).map(reasonText)].join(' · ');
    tip.dataset.edge = edge;
    tip.hidden = false;
    const x = event?.x ?? 0;
    const y = event?.y ?? 0;
    tip.style.left = `${x + 14}px`;
    tip.style.top = `${y + 14}px`;
  }

  // Removed edges, dashed, under the (transparent) edges sigma draws.
  #drawCompare(ctx) {
    if (!this.compare) return;
    // Butt caps: round ones (the health halos') would fill the gaps.
    ctx.lineCap = 'butt';
    ctx.setLineDash([8, 6]);
    this.graph.forEachEdge((e, _a, s, t) => {
      if (this.compare.get(e)?.status !== 'removed' || s === t || this.isEdgeHidden(e)) return;
      const d = this.graph.getEdgeAttributes(e);
      const p = this.sigma.graphToViewport(this.graph.getNodeAttributes(s));
      const q = this.sigma.graphToViewport(this.graph.getNodeAttributes(t));
      ctx.beginPath();
      ctx.moveTo(p.x, p.y);
      ctx.lineTo(q.x, q.y);
      ctx.strokeStyle = COMPARE_COLORS.removed;
      ctx.lineWidth = Math.max(1.5, this.sigma.scaleSize(d.size));
      ctx.stroke();
      // "removed", where sigma would have put the label.
      ctx.fillStyle = this.theme.edgeLabel;
      ctx.font = '10px system-ui, -apple-system, "Segoe UI", sans-serif';
      ctx.textAlign = 'center';
      ctx.fillText('removed', (p.x + q.x) / 2, (p.y + q.y) / 2 - 6);
    });
    ctx.setLineDash([]);
  }

  // ---- queries (legend, details, tests) --------------------------------

  nodeIds() {
    return this.graph.nodes();
  }

  edgeIds() {
    return this.graph.edges();
  }

  visibleNodeIds() {
    return this.graph.filterNodes((n, a) => {
      const d = this.sigma.getNodeDisplayData(n);
      return d ? !d.hidden : !this.isNodeHidden(a.raw);
    });
  }

  visibleEdgeIds() {
    return this.graph.filterEdges((e) => {
      // A removed edge in compare mode is drawn by the overlay.
      if (this.compare?.get(e)?.status === 'removed') return !this.isEdgeHidden(e);
      const d = this.sigma.getEdgeDisplayData(e);
      return d ? !d.hidden : !this.isEdgeHidden(e);
    });
  }

  node(id) {
    return this.graph.hasNode(id) ? this.graph.getNodeAttribute(id, 'raw') : null;
  }

  edge(id) {
    return this.graph.hasEdge(id) ? this.graph.getEdgeAttribute(id, 'raw') : null;
  }

  nodeLabel(id) {
    return this.graph.hasNode(id) ? this.graph.getNodeAttribute(id, 'label') : id;
  }

  edgesOf(id) {
    if (!this.graph.hasNode(id)) return [];
    return this.graph.edges(id).map((e) => this.graph.getEdgeAttributes(e));
  }

  // name -> graph nodes, for the legend.
  census() {
    const ns = new Map();
    const nodes = new Map();
    const protos = new Map();
    this.graph.forEachNode((_n, a) => {
      const x = nodeNamespace(a.raw);
      const k = nodeK8sNode(a.raw);
      if (x) ns.set(x, (ns.get(x) || 0) + 1);
      if (k) nodes.set(k, (nodes.get(k) || 0) + 1);
    });
    this.graph.forEachEdge((_e, a) => {
      const p = edgeProtocol(a.raw);
      protos.set(p, (protos.get(p) || 0) + 1);
    });
    return { ns, nodes, protos };
  }

  // ---- camera ----------------------------------------------------------

  zoom(dir) {
    const cam = this.sigma.getCamera();
    if (dir > 0) cam.animatedZoom({ duration: 200 });
    else if (dir < 0) cam.animatedUnzoom({ duration: 200 });
    else cam.animatedReset({ duration: 250 });
  }

  // A custom bbox stops sigma from re-framing the whole map each time a
  // node lands near the edge; it only grows, and only when it must.
  // Returns whether it changed: sigma then needs a full refresh, as it
  // derives its normalisation from the bbox only while processing.
  #fitBBox(reset) {
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const g of this.layout.groupShapes()) {
      // Frame the room reserved for each group, so a group growing into
      // its headroom does not re-frame the map.
      const r = Math.max(g.r, g.reserved) + 0.6;
      x0 = Math.min(x0, g.x - r);
      x1 = Math.max(x1, g.x + r);
      y0 = Math.min(y0, g.y - r);
      y1 = Math.max(y1, g.y + r);
    }
    if (!Number.isFinite(x0)) {
      if (reset && this.bbox) {
        this.bbox = null;
        this.sigma.setCustomBBox(null);
        return true;
      }
      return false;
    }
    const b = this.bbox;
    if (!reset && b && x0 >= b.x[0] && x1 <= b.x[1] && y0 >= b.y[0] && y1 <= b.y[1]) return false;
    this.bbox = reset || !b
      ? { x: [x0, x1], y: [y0, y1] }
      : { x: [Math.min(x0, b.x[0]), Math.max(x1, b.x[1])], y: [Math.min(y0, b.y[0]), Math.max(y1, b.y[1])] };
    this.sigma.setCustomBBox(this.bbox);
    return true;
  }

  // ---- drawing ---------------------------------------------------------

  #drawOverlay() {
    const canvas = this.overlay;
    const { width, height } = this.sigma.getDimensions();
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (this.style.group_by === 'pod') this.#drawGroups(ctx);
    if (this.compare) this.#drawCompare(ctx);
    else this.#drawHealth(ctx);
    this.#drawSelfLoops(ctx);
  }

  // Halos under unhealthy edges, and a ring around each server they point
  // at, in the health colour: the edge itself keeps its protocol's colour.
  #drawHealth(ctx) {
    const servers = new Map();
    ctx.lineCap = 'round';
    this.graph.forEachEdge((e, a, s, t) => {
      const h = a.health;
      if (!h || h === 'ok') return;
      const d = this.sigma.getEdgeDisplayData(e);
      if (!d || d.hidden || d.color === this.theme.dim) return;
      if (HEALTH_RANK[h] > HEALTH_RANK[servers.get(t) || 'ok']) servers.set(t, h);
      if (s === t) return;
      const p = this.sigma.graphToViewport(this.graph.getNodeAttributes(s));
      const q = this.sigma.graphToViewport(this.graph.getNodeAttributes(t));
      ctx.beginPath();
      ctx.moveTo(p.x, p.y);
      ctx.lineTo(q.x, q.y);
      ctx.strokeStyle = HEALTH_COLORS[h] + '80';
      ctx.lineWidth = this.sigma.scaleSize(d.size) + 7;
      ctx.stroke();
    });
    for (const [node, h] of servers) {
      const n = this.sigma.getNodeDisplayData(node);
      if (!n || n.hidden) continue;
      const p = this.sigma.graphToViewport(this.graph.getNodeAttributes(node));
      ctx.beginPath();
      ctx.arc(p.x, p.y, this.sigma.scaleSize(n.size) + 4, 0, 2 * Math.PI);
      ctx.strokeStyle = HEALTH_COLORS[h];
      ctx.lineWidth = 3;
      ctx.stroke();
    }
  }

  #drawGroups(ctx) {
    ctx.font = '600 12px system-ui, -apple-system, "Segoe UI", sans-serif';
    ctx.textAlign = 'center';
    for (const g of this.layout.groupShapes()) {
      if (g.key !== EXTERNAL_GROUP && this.hidden.ns.has(g.key)) continue;
      const c = this.sigma.graphToViewport({ x: g.x, y: g.y });
      const e = this.sigma.graphToViewport({ x: g.x + g.r, y: g.y });
      const r = Math.hypot(e.x - c.x, e.y - c.y);
      const color = g.key === EXTERNAL_GROUP ? EXTERNAL_COLOR : hashColor(g.key);
      ctx.beginPath();
      ctx.arc(c.x, c.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = color + '14';
      ctx.fill();
      ctx.strokeStyle = color + '66';
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 4]);
      ctx.stroke();
      ctx.setLineDash([]);
      if (r > 18) {
        ctx.fillStyle = this.theme.groupText;
        ctx.fillText(g.key === EXTERNAL_GROUP ? 'external' : g.key, c.x, c.y - r - 6);
      }
    }
  }

  // Traffic inside one group (e.g. namespace to itself) is a self-loop:
  // drawn as a small ring beside the node.
  #drawSelfLoops(ctx) {
    this.graph.forEachEdge((e, _a, s, t) => {
      if (s !== t) return;
      const d = this.sigma.getEdgeDisplayData(e);
      const n = this.sigma.getNodeDisplayData(s);
      if (!d || !n || d.hidden || n.hidden) return;
      const p = this.sigma.graphToViewport(this.graph.getNodeAttributes(s));
      const r = this.sigma.scaleSize(n.size);
      ctx.beginPath();
      ctx.arc(p.x - r * 1.1, p.y - r * 1.1, Math.max(5, r * 0.8), 0, 2 * Math.PI);
      ctx.strokeStyle = d.color;
      ctx.lineWidth = Math.max(1, Math.min(4, this.sigma.scaleSize(d.size) * 0.6));
      ctx.stroke();
    });
  }

  #drawHover(ctx, data, settings) {
    // sigma's default hover box is always white, unreadable in dark mode.
    const size = settings.labelSize;
    ctx.font = `${settings.labelWeight} ${size}px ${settings.labelFont}`;
    ctx.fillStyle = this.theme.hoverBg;
    ctx.shadowOffsetX = 0;
    ctx.shadowOffsetY = 0;
    ctx.shadowBlur = 8;
    ctx.shadowColor = 'rgba(0,0,0,0.45)';
    const pad = 2;
    const label = typeof data.label === 'string' ? data.label : '';
    const radius = Math.max(data.size, size / 2) + pad;
    ctx.beginPath();
    if (label) {
      const w = Math.round(ctx.measureText(label).width + 6);
      const h = Math.round(size + 2 * pad);
      const a = Math.asin(h / 2 / radius);
      const dx = Math.sqrt(Math.abs(radius ** 2 - (h / 2) ** 2));
      ctx.moveTo(data.x + dx, data.y + h / 2);
      ctx.lineTo(data.x + radius + w, data.y + h / 2);
      ctx.lineTo(data.x + radius + w, data.y - h / 2);
      ctx.lineTo(data.x + dx, data.y - h / 2);
      ctx.arc(data.x, data.y, radius, a, -a);
    } else {
      ctx.arc(data.x, data.y, radius, 0, Math.PI * 2);
    }
    ctx.closePath();
    ctx.fill();
    ctx.shadowBlur = 0;
    if (label) {
      ctx.fillStyle = this.theme.label;
      ctx.fillText(label, data.x + data.size + 3, data.y + size / 3);
    }
  }
}
