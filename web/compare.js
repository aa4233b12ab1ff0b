// Compare mode's vocabulary: the colours of added, removed and changed
// edges, and how a diff's reasons read.

// Compare mode: what changed between two windows.
export const COMPARE_COLORS = { added: '#0e9f6e', removed: '#9aa5b1', worse: '#e02424', changed: '#f59e0b' };
// Reasons whose rise is bad news (red); other changes are amber.
const WORSE_WHEN_UP = new Set(['error_rate', 'latency_p99', 'retransmits', 'failed_connects', 'handshake_rtt']);

// How an edge changed, from its diff entry: 'worse' when an error rate,
// latency or TCP health measure went up, else 'changed'.
export function changeKind(reasons) {
  return (reasons || []).some((r) => WORSE_WHEN_UP.has(r.reason) && r.after > r.before) ? 'worse' : 'changed';
}

export function reasonText(r) {
  const n = (v) => (Math.abs(v) >= 100 ? Math.round(v) : Math.round(v * 1000) / 1000);
  const unit = { error_rate: '', latency_p99: ' ms', request_rate: '/s', bytes_rate: ' B/s', handshake_rtt: ' ms', failed_connects: '/s' }[r.reason] ?? '';
  const pct = r.reason === 'error_rate' || r.reason === 'retransmits';
  const v = (x) => (pct ? `${n(x * 100)} %` : `${n(x)}${unit}`);
  return `${r.reason.replace(/_/g, ' ')} ${v(r.before)} → ${v(r.after)}`;
}
