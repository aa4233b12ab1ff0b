// Details panel for the selected node or edge.
//
// Every metric carries data-testid="detail-<key>" and its raw number in
// data-value, so tests compare exact values while people read the
// formatted text.

import { escapeHtml, fmtBytes, fmtCount, fmtMicros, fmtPercent, fmtRate } from './format.js';
import { edgeProtocol, nodeK8sNode, nodeNamespace } from './graph-view.js';

function row(key, label, value, formatted, extra = '') {
  const v = value === undefined || value === null ? '' : String(value);
  return `<dt>${escapeHtml(label)}</dt><dd data-testid="detail-${key}" data-value="${escapeHtml(v)}">${formatted}${extra}</dd>`;
}

function section(title, body) {
  return body ? `<h4>${escapeHtml(title)}</h4><dl class="metrics">${body}</dl>` : '';
}

// `detail` is the server's full answer for the selected edge (the feed
// carries summaries only); until it arrives the panel shows the summary
// and data-detail="loading".
export function renderDetails(el, sel, view, protoInfo, detail) {
  if (!sel) {
    el.hidden = true;
    el.innerHTML = '';
    return;
  }
  el.hidden = false;
  const full = sel.type === 'edge' && detail?.id === sel.id ? detail.edge : null;
  const html = sel.type === 'edge' ? edgeHtml(sel.id, view, protoInfo, full) : nodeHtml(sel.id, view, protoInfo);
  el.innerHTML =
    '<button type="button" class="close" data-action="close" title="Close" aria-label="Close details">×</button>' + html;
  el.dataset.selectedType = sel.type;
  el.dataset.selectedId = sel.id;
  el.dataset.detail = sel.type !== 'edge' || full ? 'ready' : 'loading';
}

function protoBadge(proto, protoInfo) {
  const info = protoInfo(proto) || {};
  const color = info.color || 'var(--muted)';
  const label = info.abbreviation || proto.toUpperCase();
  return `<span class="badge" style="--badge:${escapeHtml(color)}" title="${escapeHtml(info.long_name || proto)}">${escapeHtml(label)}</span>`;
}

function edgeHtml(id, view, protoInfo, full) {
  const summary = view.edge(id);
  if (!summary) return '<p class="muted">This connection is no longer in the map.</p>';
  const e = full ? { ...summary, ...full } : summary;
  const proto = edgeProtocol(e);
  let h =
    `<header><div class="kicker">${protoBadge(proto, protoInfo)} ${e.protocol ? 'L7' : 'L4'} edge</div>` +
    `<h2 data-testid="detail-title"><a href="#" data-node-id="${escapeHtml(e.source)}">${escapeHtml(view.nodeLabel(e.source))}</a>` +
    ` <span class="arrow">→</span> <a href="#" data-node-id="${escapeHtml(e.target)}">${escapeHtml(view.nodeLabel(e.target))}</a></h2>` +
    `<div class="mono muted small" data-testid="detail-edge-id">${escapeHtml(e.id)}</div></header>`;
  h += e.protocol ? l7Html(e) : l4Html(e);
  return h;
}

function l4Html(e) {
  const ts = e.to_server || {};
  const tc = e.to_client || {};
  let h = section(
    'Connection',
    row('l4', 'Transport', e.l4, escapeHtml((e.l4 || '').toUpperCase())) +
      row('flows', 'Flows', e.flows, fmtCount(e.flows)) +
      row('total_bytes', 'Total bytes', (ts.bytes || 0) + (tc.bytes || 0), fmtBytes((ts.bytes || 0) + (tc.bytes || 0))) +
      row('total_packets', 'Total packets', (ts.packets || 0) + (tc.packets || 0), fmtCount((ts.packets || 0) + (tc.packets || 0))),
  );
  const dir = (key, title, d) =>
    section(
      title,
      row(`${key}_packets`, 'Packets', d.packets, fmtCount(d.packets)) +
        row(`${key}_bytes`, 'Payload bytes', d.bytes, fmtBytes(d.bytes), exact(d.bytes)) +
        row(`${key}_ip_bytes`, 'IP bytes', d.ip_bytes, fmtBytes(d.ip_bytes), exact(d.ip_bytes)),
    );
  h += dir('to_server', 'Client → server', ts) + dir('to_client', 'Server → client', tc);
  const th = e.tcp_health;
  if (th) {
    const packets = (ts.packets || 0) + (tc.packets || 0);
    const resent = (th.retransmits_to_server || 0) + (th.retransmits_to_client || 0);
    h += section(
      'TCP health',
      row('retransmits', 'Sent again', resent, fmtCount(resent), packets ? ` <span class="muted small">(${fmtPercent(resent, packets)} of packets)</span>` : '') +
        row('retransmits_to_server', 'by the client', th.retransmits_to_server, fmtCount(th.retransmits_to_server)) +
        row('retransmits_to_client', 'by the server', th.retransmits_to_client, fmtCount(th.retransmits_to_client)) +
        row('resets_by_client', 'Resets by client', th.resets_by_client, fmtCount(th.resets_by_client)) +
        row('resets_by_server', 'Resets by server', th.resets_by_server, fmtCount(th.resets_by_server)) +
        row('failed_connects', 'Failed connects', th.failed_connects, fmtCount(th.failed_connects)) +
        (th.handshakes
          ? row('handshake_rtt_mean', 'Handshake RTT', th.handshake_rtt_ms_mean, fmtMicros(Math.round(th.handshake_rtt_ms_mean * 1000)), ` <span class="muted small">(max ${fmtMicros(Math.round(th.handshake_rtt_ms_max * 1000))}, ${fmtCount(th.handshakes)} timed)</span>`)
          : ''),
    );
  }
  const r = e.rate;
  if (r) {
    h += section(
      `Rate (last ${fmtCount(r.window_secs)} s)`,
      row('rate_to_server_bps', 'To server', r.to_server?.bytes_per_sec, fmtRate(r.to_server?.bytes_per_sec, 'B')) +
        row('rate_to_server_pps', '', r.to_server?.packets_per_sec, fmtRate(r.to_server?.packets_per_sec, 'pkt')) +
        row('rate_to_client_bps', 'To client', r.to_client?.bytes_per_sec, fmtRate(r.to_client?.bytes_per_sec, 'B')) +
        row('rate_to_client_pps', '', r.to_client?.packets_per_sec, fmtRate(r.to_client?.packets_per_sec, 'pkt')),
    );
  }
  return h;
}

function exact(n) {
  return n >= 1024 ? ` <span class="muted small">(${fmtCount(n)} B)</span>` : '';
}

function l7Html(e) {
  const lat = e.latency_us || {};
  let h = section(
    'Requests',
    // An edge of one virtual host (its server serves several).
    (e.host ? row('host', 'Host', e.host, `<span class="mono">${escapeHtml(e.host)}</span>`) : '') +
      row('requests', 'Requests', e.requests, fmtCount(e.requests)) +
      (e.tls_requests ? row('tls_requests', 'Over TLS', e.tls_requests, `${fmtCount(e.tls_requests)} <span class="muted small">(read at the TLS library)</span>`) : '') +
      row('errors', 'Errors', e.errors, fmtCount(e.errors), e.requests ? ` <span class="muted small">(${fmtPercent(e.errors || 0, e.requests)})</span>` : '') +
      row('requests_per_sec', 'Rate', e.requests_per_sec, fmtRate(e.requests_per_sec, 'req')),
  );
  h += section(
    'Bytes',
    row('request_bytes', 'Request', e.request_bytes, fmtBytes(e.request_bytes), exact(e.request_bytes)) +
      row('response_bytes', 'Response', e.response_bytes, fmtBytes(e.response_bytes), exact(e.response_bytes)),
  );
  h += section(
    'Latency',
    row('latency_p50', 'p50', lat.p50, fmtMicros(lat.p50)) +
      row('latency_p95', 'p95', lat.p95, fmtMicros(lat.p95)) +
      row('latency_p99', 'p99', lat.p99, fmtMicros(lat.p99)),
  );
  if (Array.isArray(e.top) && e.top.length) {
    const max = Math.max(...e.top.map((t) => t.count || 0), 1);
    h += '<h4>Top requests</h4><ol class="top" data-testid="detail-top">';
    for (const t of e.top) {
      h +=
        `<li data-name="${escapeHtml(t.name)}" data-value="${escapeHtml(t.count)}"><span class="bar" style="width:${((100 * (t.count || 0)) / max).toFixed(1)}%"></span>` +
        `<span class="mono">${escapeHtml(t.name)}</span><span class="n">${fmtCount(t.count)}</span></li>`;
    }
    h += '</ol>';
  }
  return h;
}

function nodeHtml(id, view, protoInfo) {
  const n = view.node(id);
  if (!n) return '<p class="muted">This node is no longer in the map.</p>';
  let h =
    `<header><div class="kicker">${escapeHtml(n.kind || 'node')}</div>` +
    `<h2 data-testid="detail-title">${escapeHtml(n.name || n.id)}</h2>` +
    `<div class="mono muted small" data-testid="detail-node-id">${escapeHtml(n.id)}</div></header>`;
  h += section(
    'Placement',
    (nodeNamespace(n) ? row('namespace', 'Namespace', nodeNamespace(n), escapeHtml(nodeNamespace(n))) : '') +
      (nodeK8sNode(n) ? row('node', 'Node', nodeK8sNode(n), escapeHtml(nodeK8sNode(n))) : ''),
  );
  const edges = view.edgesOf(id);
  const out = edges.filter((a) => a.raw.source === id);
  const inc = edges.filter((a) => a.raw.target === id && a.raw.source !== id);
  const list = (title, arr, peerKey) => {
    if (!arr.length) return '';
    let s = `<h4>${title} <span class="muted small">${arr.length}</span></h4><ul class="edge-list">`;
    for (const a of arr.sort((x, y) => (y.size || 0) - (x.size || 0))) {
      const e = a.raw;
      s +=
        `<li><button type="button" class="linkish" data-edge-id="${escapeHtml(e.id)}">${protoBadge(edgeProtocol(e), protoInfo)} ` +
        `${escapeHtml(view.nodeLabel(e[peerKey]))}</button><span class="muted small">${escapeHtml(a.label || '')}</span></li>`;
    }
    return s + '</ul>';
  };
  h += list('Outgoing', out, 'target') + list('Incoming', inc, 'source');
  return h;
}
