// The drop warning in the header: /api/health every few seconds, and a
// warning when any loss counter (this server's, or any worker's) grew since
// the page started watching. Drops are data: a thin map must never pass
// for a quiet cluster.

import { apiFetch } from './auth.js';
import { fmtCount } from './format.js';

const POLL_MS = 5000;

// What each counter means, as the warning's tooltip says it.
const CAUSES = {
  ring_drops: 'packets the capture rings dropped (full)',
  ebpf_map_full: 'flows the eBPF flow map had no room for',
  ebpf_evicted: 'flows the full eBPF flow map evicted',
  flows_evicted: 'connections evicted from the L7 flow table (--max-flows)',
  reassembly_gaps: 'holes in reassembled streams',
  reassembly_budget_releases: 'connections that gave up out-of-order bytes (reassembly budget)',
  plugin_detaches: 'connections detached from their plugin',
  reorder_overflow: 'packets released early by the reorder buffer',
  records_dropped: 'records a worker lost outright',
  conversations_dropped: 'closed-flow conversations a worker could not keep',
  flows_dropped: 'flows a worker lost (its outbox was full)',
  journal_evicted: 'sent records a worker could no longer resend',
  tls_ring_full: 'TLS plaintext chunks the kernel ring had no room for',
  tls_lost_bytes: 'TLS plaintext bytes not captured',
};

/** Loss totals by cause, over this server and every worker. */
export function lossTotals(health) {
  const out = {};
  const add = (k, v) => {
    if (k in CAUSES && Number.isFinite(v)) out[k] = (out[k] || 0) + v;
  };
  const c = (health && health.counters) || {};
  add('ring_drops', c.ring_drops);
  for (const [k, v] of Object.entries(c.losses || {})) add(k, v);
  for (const w of Object.values((health && health.workers) || {})) {
    for (const [k, v] of Object.entries(w)) add(k, v);
    for (const [k, v] of Object.entries(w.losses || {})) add(k, v);
  }
  return out;
}

export class LossWatch {
  constructor(el) {
    this.el = el;
    this.base = null;
    this.timer = null;
  }

  start() {
    this.poll();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  async poll() {
    let health;
    try {
      const r = await apiFetch('api/health', { cache: 'no-store' });
      if (!r.ok) return;
      health = await r.json();
    } catch {
      return;
    }
    const now = lossTotals(health);
    // What was lost before the page opened is history; growth is news.
    if (!this.base) this.base = now;
    const grown = Object.keys(now)
      .map((k) => [k, now[k] - (this.base[k] || 0)])
      .filter(([, d]) => d > 0);
    this.el.hidden = grown.length === 0;
    if (!grown.length) return;
    const total = grown.reduce((a, [, d]) => a + d, 0);
    this.el.textContent = `⚠ ${fmtCount(total)} lost`;
    this.el.title =
      'Lost since this page opened (see /metrics):\n' + grown.map(([k, d]) => `${fmtCount(d)} ${CAUSES[k]}`).join('\n');
    this.el.dataset.causes = grown.map(([k]) => k).join(' ');
  }
}
