// Access to the API: a bearer token, asked for when the API answers 401
// and kept for this tab only (sessionStorage). Fetches send it in the
// Authorization header; the WebSocket, which cannot set headers, sends it
// as a subprotocol (`trawl.bearer.<base64url>`), never in the URL, so it
// stays out of access logs.

const KEY = 'trawl.token';

export function token() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

function setToken(t) {
  try {
    if (t) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage off: the token lives as long as the page.
  }
  memory = t;
}

let memory = '';
const current = () => token() || memory;

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Subprotocols for `new WebSocket(url, …)`: the server echoes `trawl`. */
export function wsProtocols() {
  const t = current();
  return t ? ['trawl', `trawl.bearer.${base64url(t)}`] : ['trawl'];
}

function headers(extra = {}) {
  const t = current();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

let asking = null;

/** Shows the token dialog; resolves once a token is entered. */
function askToken(message) {
  if (asking) return asking;
  const dialog = document.querySelector('[data-testid="token-dialog"]');
  const input = dialog.querySelector('input[name="token"]');
  const note = dialog.querySelector('[data-testid="token-message"]');
  note.textContent = message;
  input.value = '';
  asking = new Promise((resolve) => {
    dialog.onsubmit = (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      setToken(t);
      dialog.close();
      asking = null;
      resolve();
    };
    // Escape must not leave the page without a way in.
    dialog.oncancel = (ev) => ev.preventDefault();
  });
  dialog.showModal();
  input.focus();
  return asking;
}

/** `fetch` with the token; on 401 asks for one and tries again. */
export async function apiFetch(path, opts = {}) {
  for (;;) {
    const r = await fetch(path, { ...opts, headers: headers(opts.headers) });
    if (r.status !== 401) return r;
    await askToken(current() ? 'That token was not accepted. Enter an API token:' : 'This trawl needs an API token to show the map:');
  }
}

/** Resolves once the API accepts this tab (asking for a token if needed). */
export async function ensureAccess() {
  try {
    await apiFetch('api/whoami', { cache: 'no-store' });
  } catch {
    // The server is down: the WebSocket's retries say so.
  }
}
