// Plugins tab: the loaded protocol plugins and their health, from
// /api/plugins, refreshed while the tab is open.

import { escapeHtml, fmtCount } from './format.js';
import { apiFetch } from './auth.js';

const REFRESH_MS = 5000;

export class PluginsView {
  constructor(root, { onPlugins }) {
    this.root = root;
    this.onPlugins = onPlugins;
    this.timer = null;
    this.plugins = [];
    root.innerHTML =
      '<div class="plugins-head"><h2>Protocol plugins</h2><span class="muted small" data-testid="plugins-status"></span></div>' +
      '<div class="table-wrap"><table class="plugins" data-testid="plugins-table"><thead><tr>' +
      '<th></th><th>Name</th><th>Version</th><th>State</th><th class="num">Records</th><th class="num">Faults</th>' +
      '<th class="num">Live conns</th><th class="num">Detached</th><th>Ports</th><th>Gen</th><th>Hash</th><th>Last error</th>' +
      '</tr></thead><tbody></tbody></table></div>';
    this.tbody = root.querySelector('tbody');
    this.status = root.querySelector('[data-testid="plugins-status"]');
  }

  show() {
    this.load();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.load(), REFRESH_MS);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
  }

  async load() {
    try {
      const r = await apiFetch('api/plugins', { cache: 'no-store' });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const list = await r.json();
      this.plugins = Array.isArray(list) ? list : [];
      this.render();
      this.status.textContent = `${this.plugins.length} loaded · updated ${new Date().toLocaleTimeString()}`;
      this.onPlugins(this.plugins);
    } catch (err) {
      this.status.textContent = `Could not load plugins: ${err.message}`;
    }
    return this.plugins;
  }

  render() {
    const rows = [...this.plugins].sort((a, b) => String(a.name).localeCompare(String(b.name)));
    if (!rows.length) {
      this.tbody.innerHTML = '<tr><td colspan="12" class="muted">No plugins loaded.</td></tr>';
      return;
    }
    this.tbody.innerHTML = rows
      .map((p) => {
        const state = String(p.state || 'unknown');
        const ports = Array.isArray(p.ports) ? p.ports.join(', ') : escapeHtml(p.ports ?? '');
        const hash = String(p.hash || '');
        return (
          `<tr data-testid="plugin-row-${escapeHtml(p.name)}">` +
          `<td><span class="swatch" style="background:${escapeHtml(p.color || 'var(--muted)')}" title="${escapeHtml(p.color || '')}"></span></td>` +
          `<td><strong>${escapeHtml(p.abbreviation || p.name)}</strong> <span class="muted small">${escapeHtml(p.long_name || '')}</span>` +
          `<div class="muted small mono" title="${escapeHtml(p.source || '')}">${escapeHtml(p.name)}</div></td>` +
          `<td class="mono">${escapeHtml(p.version ?? '')}</td>` +
          `<td><span class="state state-${escapeHtml(stateClass(state))}" data-testid="plugin-state">${escapeHtml(state)}</span></td>` +
          `<td class="num">${fmtCount(p.records)}</td>` +
          `<td class="num${p.faults ? ' bad' : ''}">${fmtCount(p.faults)}</td>` +
          `<td class="num">${fmtCount(p.live_connections)}</td>` +
          `<td class="num">${fmtCount(p.detached_connections)}</td>` +
          `<td class="mono">${escapeHtml(ports)}</td>` +
          `<td class="num">${escapeHtml(p.generation ?? '')}</td>` +
          `<td class="mono small" title="${escapeHtml(hash)}">${escapeHtml(shortHash(hash))}</td>` +
          `<td class="error-cell">${p.last_error ? escapeHtml(p.last_error) : '<span class="muted">—</span>'}</td>` +
          '</tr>'
        );
      })
      .join('');
  }
}

function stateClass(s) {
  const x = s.toLowerCase();
  if (/(run|active|ok|ready|loaded)/.test(x)) return 'ok';
  if (/(fault|fail|error|crash|dead|trap)/.test(x)) return 'bad';
  return 'warn';
}

function shortHash(h) {
  const i = h.indexOf(':');
  const body = i >= 0 ? h.slice(i + 1) : h;
  return body.length > 12 ? body.slice(0, 12) + '…' : body;
}
