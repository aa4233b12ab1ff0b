// The time bar: the live map, or a window of the past (history, kept by
// the server per 10 s, 1 min and 10 min), stepped through by hand or
// played at a chosen speed, as Kiali's Replay does; and compare mode,
// which draws what changed since the window before.
//
// Time is the data's: capture time in a replay, wall time live. "Now" is
// asked of the server (`/api/health`), never taken from this browser's
// clock.

import { apiFetch } from './auth.js';

const $t = (id) => document.querySelector(`[data-testid="${id}"]`);

export const SPANS = [60, 300, 900, 3600];
const STEP_MS = 1000;

function clock(secs) {
  const d = new Date(secs * 1000);
  const two = (n) => String(n).padStart(2, '0');
  return `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
}

function day(secs) {
  return new Date(secs * 1000).toISOString().slice(0, 10);
}

export class TimeBar {
  // onChange({from, to} | null): the window to show (null: live).
  // onCompare(on): compare mode switched.
  constructor({ onChange, onCompare }) {
    this.onChange = onChange;
    this.onCompare = onCompare;
    this.window = null;
    this.span = 300;
    this.speed = 1;
    this.compare = false;
    this.timer = null;
    this.now = null;
    this.el = {
      live: $t('time-live'),
      back: $t('time-back'),
      forward: $t('time-forward'),
      label: $t('time-label'),
      span: $t('time-span'),
      play: $t('time-play'),
      speed: $t('time-speed'),
      compare: $t('time-compare'),
      at: $t('time-at'),
    };
    // Pick a window: the one that ends at the time typed (UTC).
    this.el.at.addEventListener('change', () => {
      const t = Date.parse(`${this.el.at.value}Z`) / 1000;
      if (!Number.isFinite(t)) return;
      const to = Math.ceil(t / 10) * 10;
      this.play(false);
      this.show({ from: to - this.span, to });
    });
    this.el.live.addEventListener('click', () => this.goLive());
    this.el.back.addEventListener('click', () => this.step(-1));
    this.el.forward.addEventListener('click', () => this.step(1));
    this.el.span.addEventListener('change', () => {
      this.span = Number(this.el.span.value) || 300;
      if (this.window) this.show({ from: this.window.to - this.span, to: this.window.to });
    });
    this.el.speed.addEventListener('change', () => {
      this.speed = Number(this.el.speed.value) || 1;
      if (this.timer) this.play(true);
    });
    this.el.play.addEventListener('click', () => this.play(!this.timer));
    this.el.compare.addEventListener('change', () => {
      this.compare = this.el.compare.checked;
      this.render();
      this.onCompare(this.compare);
    });
  }

  // From the URL: a window, a span, compare mode.
  restore({ from, to, span, compare }) {
    if (SPANS.includes(span)) this.span = span;
    this.compare = !!compare;
    if (Number.isFinite(from) && Number.isFinite(to) && from < to) {
      this.window = { from, to };
      this.span = to - from;
    }
    this.render();
  }

  // The newest data's time, in unix seconds.
  async dataNow() {
    try {
      const r = await apiFetch('api/health', { cache: 'no-store' });
      const h = await r.json();
      this.now = Math.ceil(Number(h.capture_time_ns) / 1e9) || null;
    } catch {
      /* keep the last one */
    }
    return this.now;
  }

  // One window back or forward; forward past the newest data is live.
  async step(dir) {
    const now = (await this.dataNow()) ?? Math.floor(Date.now() / 1000);
    // Windows end on a 10 s boundary: history's finest interval.
    const base = this.window ? this.window.to : Math.ceil(now / 10) * 10;
    const to = base + dir * this.span;
    if (dir > 0 && to - this.span >= now) return this.goLive();
    this.show({ from: to - this.span, to });
  }

  show(w) {
    this.window = w;
    this.render();
    this.onChange(w);
  }

  goLive() {
    this.play(false);
    if (!this.window) return;
    this.window = null;
    this.render();
    this.onChange(null);
  }

  // Replay: the window moves forward 10 s of data time every second
  // divided by the speed, until it reaches now, then the map goes live.
  async play(on) {
    clearInterval(this.timer);
    this.timer = null;
    if (on) {
      if (!this.window) {
        const now = (await this.dataNow()) ?? 0;
        const start = Math.floor((now - 6 * this.span) / 10) * 10;
        this.show({ from: start, to: start + this.span });
      }
      this.timer = setInterval(async () => {
        const now = this.now ?? (await this.dataNow());
        const w = this.window;
        if (!w) return this.play(false);
        if (w.to + 10 > now) {
          await this.dataNow();
          if (w.to + 10 > this.now) return this.goLive();
        }
        this.show({ from: w.from + 10, to: w.to + 10 });
      }, STEP_MS / this.speed);
    }
    this.render();
  }

  render() {
    const w = this.window;
    this.el.live.setAttribute('aria-pressed', String(!w));
    this.el.live.classList.toggle('primary', !w);
    this.el.forward.disabled = !w;
    this.el.label.textContent = w ? `${day(w.from)} ${clock(w.from)} – ${clock(w.to)} UTC` : 'live';
    this.el.label.dataset.from = w ? String(w.from) : '';
    this.el.label.dataset.to = w ? String(w.to) : '';
    if (!SPANS.includes(this.span)) {
      const o = document.createElement('option');
      o.value = String(this.span);
      o.textContent = this.span < 60 ? `${this.span} s` : `${Math.round(this.span / 60)} min`;
      this.el.span.append(o);
    }
    this.el.span.value = String(this.span);
    this.el.play.textContent = this.timer ? '❚❚' : '▶';
    this.el.play.setAttribute('aria-pressed', String(!!this.timer));
    this.el.play.title = this.timer ? 'Pause' : 'Play the past';
    this.el.compare.checked = this.compare;
    if (w && document.activeElement !== this.el.at) this.el.at.value = new Date(w.to * 1000).toISOString().slice(0, 19);
    this.el.compare.disabled = !w;
  }
}
