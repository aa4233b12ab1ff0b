// Protocol legend plus the namespace / k8s-node / protocol filters.
//
// Entries are updated in place, keyed by name, rather than re-rendered:
// deltas arrive several times a second and a rebuilt button would swallow
// a click that started on its predecessor.

import { escapeHtml, fmtCount, hashColor } from './format.js';
import { HEALTH_COLORS, HEALTH_THRESHOLDS } from './graph-view.js';
import { COMPARE_COLORS } from './compare.js';

const KINDS = [
  { kind: 'proto', title: 'Protocols', testid: 'legend-proto-' },
  { kind: 'ns', title: 'Namespaces', testid: 'legend-ns-' },
  { kind: 'node', title: 'Nodes', testid: 'legend-node-' },
];

export class Legend {
  // onToggle(kind, newHiddenSet), onHideAll(), onReset(), onErrorsOnly(bool)
  constructor(root, { onToggle, onHideAll, onReset, onErrorsOnly }) {
    this.root = root;
    this.hidden = { ns: new Set(), node: new Set(), proto: new Set() };
    this.lists = {};
    this.sections = {};
    root.innerHTML = '';
    for (const k of KINDS) {
      const sec = document.createElement('section');
      sec.className = 'legend-section';
      sec.dataset.kind = k.kind;
      sec.innerHTML = `<h3>${k.title}</h3><ul class="legend-list" data-testid="legend-${k.kind}-list"></ul>`;
      root.appendChild(sec);
      this.sections[k.kind] = sec;
      this.lists[k.kind] = { ul: sec.querySelector('ul'), items: new Map(), testid: k.testid };
    }
    // Health: what the halos mean, and a switch to show only unhealthy
    // edges. Edges keep their protocol's colour; health is drawn around.
    const health = document.createElement('section');
    health.className = 'legend-section';
    health.dataset.kind = 'health';
    health.innerHTML =
      '<h3>Health</h3>' +
      '<ul class="legend-list health-key" data-testid="legend-health">' +
      `<li><span class="swatch halo" style="--halo:${HEALTH_COLORS.degraded}"></span><span data-health="degraded"></span></li>` +
      `<li><span class="swatch halo" style="--halo:${HEALTH_COLORS.failing}"></span><span data-health="failing"></span></li>` +
      '</ul>' +
      '<p class="legend-note">A halo under an edge, and a ring around the server it calls; the edge keeps its protocol\'s colour.</p>' +
      '<label class="legend-switch"><input type="checkbox" data-testid="errors-only"> Errors only</label>';
    root.appendChild(health);
    this.healthSection = health;
    this.healthLabels = { degraded: health.querySelector('[data-health="degraded"]'), failing: health.querySelector('[data-health="failing"]') };
    this.setHealthThresholds(HEALTH_THRESHOLDS);
    this.errorsOnly = health.querySelector('[data-testid="errors-only"]');
    this.errorsOnly.addEventListener('change', () => onErrorsOnly?.(this.errorsOnly.checked));
    // Compare mode: what the colours mean while it is on.
    const compare = document.createElement('section');
    compare.className = 'legend-section';
    compare.dataset.kind = 'compare';
    compare.hidden = true;
    const key = (color, text, dashed = false) =>
      `<li><span class="swatch line${dashed ? ' dashed' : ''}" style="--line:${color}"></span>${text}</li>`;
    compare.innerHTML =
      '<h3>Compared with the window before</h3>' +
      '<ul class="legend-list" data-testid="legend-compare">' +
      key(COMPARE_COLORS.added, 'Added') +
      key(COMPARE_COLORS.removed, 'Removed', true) +
      key(COMPARE_COLORS.worse, 'Worse: errors, latency or TCP trouble up') +
      key(COMPARE_COLORS.changed, 'Changed: rate or volume') +
      '</ul>' +
      '<p class="legend-note">Unchanged edges are faded. Hover an edge for the reasons, before → after.</p>';
    root.appendChild(compare);
    this.compareSection = compare;
    const actions = document.createElement('div');
    actions.className = 'legend-actions';
    actions.innerHTML =
      '<button type="button" class="btn small" data-testid="legend-hide-all">Hide all</button>' +
      '<button type="button" class="btn small" data-testid="legend-reset">Reset</button>';
    root.appendChild(actions);
    actions.querySelector('[data-testid="legend-hide-all"]').addEventListener('click', onHideAll);
    actions.querySelector('[data-testid="legend-reset"]').addEventListener('click', onReset);
    root.addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-kind]');
      if (!b) return;
      const { kind, name } = b.dataset;
      const set = new Set(this.hidden[kind]);
      if (set.has(name)) set.delete(name);
      else set.add(name);
      onToggle(kind, set);
    });
  }

  // The thresholds in words: "Degraded: ≥ 0.1 % errors".
  setHealthThresholds(t) {
    const pct = (x) => `${+(x * 100).toPrecision(3)} %`;
    const ms = (x) => (x >= 1000 ? `${+(x / 1000).toPrecision(3)} s` : `${+x.toPrecision(3)} ms`);
    const slow = (x) => (x > 0 ? ` or p99 ≥ ${ms(x)}` : '');
    this.healthLabels.degraded.textContent = `Degraded: ≥ ${pct(t.degraded)} errors${slow(t.latency_degraded_ms)}`;
    this.healthLabels.failing.textContent = `Failing: ≥ ${pct(t.failing)} errors${slow(t.latency_failing_ms)}`;
  }

  // protocols: [{ protocol, abbreviation, long_name, color, count }]
  // ns, nodes: Map name -> graph node count; hidden: { ns, node, proto }
  update({ protocols, ns, nodes, hidden, errorsOnly, map, comparing = false }) {
    this.hidden = hidden;
    // Health is an L7 measure (error rates); L4 health is in the details.
    // In compare mode, colours say what changed instead.
    this.healthSection.hidden = map !== 'l7' || comparing;
    this.compareSection.hidden = !comparing;
    this.errorsOnly.checked = !!errorsOnly;
    this.#sync('proto', protocols.map((p) => ({
      name: p.protocol,
      label: p.abbreviation || p.protocol.toUpperCase(),
      title: p.long_name || p.protocol,
      color: p.color,
      count: p.count,
      unit: 'edge',
    })));
    // Hidden names stay listed even when they left the map, so they can
    // still be shown again.
    const entries = (m, kind, colorOf) => {
      const names = new Set([...m.keys(), ...hidden[kind]]);
      return [...names].sort().map((name) => ({ name, label: name, title: name, color: colorOf(name), count: m.get(name) || 0, unit: 'node' }));
    };
    this.#sync('ns', entries(ns, 'ns', (n) => hashColor(n)));
    this.#sync('node', entries(nodes, 'node', (n) => hashColor('node:' + n, 48)));
  }

  #sync(kind, entries) {
    const list = this.lists[kind];
    const seen = new Set();
    let prev = null;
    for (const e of entries) {
      seen.add(e.name);
      let li = list.items.get(e.name);
      if (!li) {
        li = document.createElement('li');
        li.innerHTML =
          `<button type="button" class="chip" data-kind="${kind}" data-name="${escapeHtml(e.name)}" data-testid="${list.testid}${escapeHtml(e.name)}">` +
          '<span class="swatch"></span><span class="chip-label"></span><span class="count"></span></button>';
        list.items.set(e.name, li);
      }
      // Keep DOM order equal to entry order without touching nodes that
      // are already in place.
      const want = prev ? prev.nextSibling : list.ul.firstChild;
      if (want !== li) list.ul.insertBefore(li, want);
      prev = li;
      const b = li.firstChild;
      const shown = !this.hidden[kind].has(e.name);
      if (b.getAttribute('aria-pressed') !== String(shown)) b.setAttribute('aria-pressed', String(shown));
      b.title = `${e.title} — ${fmtCount(e.count)} ${e.unit}${e.count === 1 ? '' : 's'}; click to ${shown ? 'hide' : 'show'}`;
      const sw = b.querySelector('.swatch');
      if (sw.dataset.color !== e.color) {
        sw.dataset.color = e.color;
        sw.style.background = e.color;
      }
      const lab = b.querySelector('.chip-label');
      if (lab.textContent !== e.label) lab.textContent = e.label;
      const cnt = b.querySelector('.count');
      const c = fmtCount(e.count);
      if (cnt.textContent !== c) cnt.textContent = c;
    }
    for (const [name, li] of list.items) {
      if (!seen.has(name)) {
        li.remove();
        list.items.delete(name);
      }
    }
    this.sections[kind].hidden = entries.length === 0;
  }
}
