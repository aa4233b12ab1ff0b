//! Redaction: secrets never leave the plugin that sees them.
//!
//! Every first-party plugin builds its records with these helpers, and a
//! third-party plugin should too. The host sets the [`Policy`] once per
//! instance (the optional `trawl_configure` export, see `sdk/ABI.md`), and
//! applies [`Policy::scrub_record`] to every record again, as a second line
//! for plugins that do not redact.
//!
//! At the default level:
//! - the values of `Authorization`, `Proxy-Authorization`, `Cookie` and
//!   `Set-Cookie` (cookie names and an authorization's scheme kept), and of
//!   any header whose name contains `token`, `secret`, `key`, `pass`,
//!   `auth` or `session`, in any case, plus the names the operator adds;
//! - URL query values, names kept (`?user=[REDACTED]&page=[REDACTED]`),
//!   and the credentials of a URL's `user:password@`; paths stay.
//!
//! `strict` also tells plugins to drop values and previews (a Redis
//! command's arguments past its key, say); `off` redacts nothing.

use crate::abi::{Record, Value};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::RwLock;

/// What a redacted value becomes.
pub const REDACTED: &str = "[REDACTED]";

// The name lists below are `matches!` on bytes, not `contains` on a list
// of strings: they run on every header of every record, in the plugin and
// again in the host, and a match first compares lengths, then at most a
// few names of that length (a list compared each name in turn).

/// Header names whose values are always secret.
fn is_secret_header(lower: &[u8]) -> bool {
    matches!(lower, b"authorization" | b"proxy-authorization" | b"cookie" | b"set-cookie")
}

/// A header is secret when its name contains one of these.
#[cfg(test)]
const SECRET_WORDS: &[&str] = &["token", "secret", "key", "pass", "auth", "session"];

/// Headers whose value is a URL: its query values and credentials are
/// redacted as a request target's are (an OAuth `?code=` in a redirect).
fn is_url_header(lower: &[u8]) -> bool {
    matches!(lower, b"location" | b"referer" | b"content-location" | b"origin" | b"link")
}

/// Under `strict`, the only headers whose values stay.
fn is_strict_keep(lower: &[u8]) -> bool {
    matches!(
        lower,
        b"content-type"
            | b"content-length"
            | b"content-encoding"
            | b"transfer-encoding"
            | b"host"
            | b"user-agent"
            | b"accept"
            | b"accept-encoding"
            | b"server"
            | b"date"
            | b"cache-control"
            | b"connection"
            | b"te"
            | b"grpc-status"
            | b"grpc-encoding"
            | b"grpc-accept-encoding"
            | b"grpc-timeout"
    )
}

/// Cookie attributes, kept after a `Set-Cookie`'s redacted value.
const COOKIE_ATTRIBUTES: &[&str] =
    &["path", "domain", "expires", "max-age", "secure", "httponly", "samesite", "partitioned", "priority"];

/// How much to redact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    /// Nothing: for a lab, never for a cluster.
    Off,
    /// Credentials, tokens, cookies and query values.
    #[default]
    Default,
    /// The default, and values and previews as well.
    Strict,
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Level::Off),
            "default" => Ok(Level::Default),
            "strict" => Ok(Level::Strict),
            other => Err(format!("unknown redaction level {other:?} (strict, default or off)")),
        }
    }
}

/// The redaction a host asks of its plugins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub level: Level,
    /// More header names whose values are secret, lower case.
    pub headers: Vec<String>,
}

/// What the host hands a plugin's optional `trawl_configure` export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginConfig {
    pub redact: Policy,
}

static POLICY: RwLock<Option<Policy>> = RwLock::new(None);

/// Sets the policy of this plugin (the SDK's glue calls it for
/// `trawl_configure`; a natively linked plugin shares its process's).
pub fn set_policy(policy: Policy) {
    *POLICY.write().unwrap_or_else(|e| e.into_inner()) = Some(policy);
}

/// Runs `f` with the current policy (the default until the host sets one).
pub fn with_policy<R>(f: impl FnOnce(&Policy) -> R) -> R {
    let guard = POLICY.read().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(p) => f(p),
        None => f(&Policy::default()),
    }
}

/// The value of header `name` as records may show it.
pub fn header_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    with_policy(|p| p.header_value(name, value))
}

/// A request target (`/path?query`, or absolute form) as records may show it.
pub fn target(target: &str) -> Cow<'_, str> {
    with_policy(|p| p.target(target))
}

/// A query string (without its `?`) as records may show it.
pub fn query(query: &str) -> Cow<'_, str> {
    with_policy(|p| p.query(query))
}

/// Whether values and previews are dropped as well.
pub fn strict() -> bool {
    with_policy(|p| p.level == Level::Strict)
}

/// Whether anything is redacted at all.
pub fn enabled() -> bool {
    with_policy(|p| p.level != Level::Off)
}

impl Policy {
    pub fn new(level: Level, headers: &[String]) -> Self {
        Policy { level, headers: headers.iter().map(|h| h.trim().to_ascii_lowercase()).collect() }
    }

    /// Whether header `name`'s value is secret.
    pub fn secret_header(&self, name: &str) -> bool {
        let mut buf = [0u8; 64];
        self.secret_lower(&lowered(name, &mut buf))
    }

    /// [`Self::secret_header`] of a name already in lower case.
    fn secret_lower(&self, lower: &[u8]) -> bool {
        if self.level == Level::Off || lower.first() == Some(&b':') {
            return false;
        }
        is_secret_header(lower)
            || has_secret_word(lower)
            || self.headers.iter().any(|h| h.as_bytes() == lower)
            || (self.level == Level::Strict && !is_strict_keep(lower) && !is_url_header(lower))
    }

    /// The value of header `name` as records may show it: cookie names and
    /// an authorization's scheme stay, so a reader still sees what kind of
    /// credential went by.
    pub fn header_value<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if self.level == Level::Off {
            return Cow::Borrowed(value);
        }
        let mut buf = [0u8; 64];
        let lower = lowered(name, &mut buf);
        let lower: &[u8] = &lower;
        if is_url_header(lower) {
            return self.target(value);
        }
        if lower == b"sec-websocket-protocol" {
            // A browser's WebSocket carries its token here (trawl's own
            // UI, Kubernetes' `base64url.bearer.authorization.k8s.io.…`).
            return self.subprotocols(value);
        }
        if !self.secret_lower(lower) {
            return Cow::Borrowed(value);
        }
        Cow::Owned(match lower {
            b"cookie" => cookie_names(value, "; "),
            b"set-cookie" => {
                // `name=value; Path=/; HttpOnly`: the attributes are not secret.
                let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
                let mut out = cookie_names(pair, "");
                for attribute in attributes.split(';').map(str::trim).filter(|a| !a.is_empty()) {
                    let name = attribute.split('=').next().unwrap_or_default().trim().to_ascii_lowercase();
                    out.push_str("; ");
                    // A second `=` is another cookie joined on (`Path=/, b=…`).
                    if COOKIE_ATTRIBUTES.contains(&name.as_str()) && attribute.matches('=').count() <= 1 {
                        out.push_str(attribute);
                    } else {
                        out.push_str(REDACTED);
                    }
                }
                out
            }
            b"authorization" | b"proxy-authorization" => match value.trim().split_once(' ') {
                Some((scheme, _))
                    if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                {
                    format!("{scheme} {REDACTED}")
                }
                _ => REDACTED.to_string(),
            },
            _ => REDACTED.to_string(),
        })
    }

    /// A query string (without its `?`): every value redacted, names kept.
    /// A part without `=` is kept only when it reads as a flag (a short
    /// word without digits); otherwise it may be a bare token.
    pub fn query<'a>(&self, query: &'a str) -> Cow<'a, str> {
        if self.level == Level::Off {
            return Cow::Borrowed(query);
        }
        let flag = |p: &str| {
            p.is_empty()
                || (self.level != Level::Strict
                    && p.len() <= 16
                    && p.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_'))
        };
        if !query.contains('=') && query.split('&').all(flag) {
            return Cow::Borrowed(query);
        }
        let mut out = String::with_capacity(query.len());
        for (i, part) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match part.split_once('=') {
                Some((name, value)) if !value.is_empty() => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                Some(_) => out.push_str(part),
                None if flag(part) => out.push_str(part),
                None => out.push_str(REDACTED),
            }
        }
        Cow::Owned(out)
    }

    /// A `Sec-WebSocket-Protocol` list with every entry that carries a
    /// credential redacted.
    fn subprotocols<'a>(&self, value: &'a str) -> Cow<'a, str> {
        let secret = |p: &str| {
            let l = p.to_ascii_lowercase();
            l.contains("bearer") || l.contains("token") || l.contains("auth")
        };
        if !value.split(',').any(|p| secret(p.trim())) {
            return Cow::Borrowed(value);
        }
        let parts: Vec<&str> = value.split(',').map(str::trim).map(|p| if secret(p) { REDACTED } else { p }).collect();
        Cow::Owned(parts.join(", "))
    }

    /// A request target: the path stays; query values and a URL's
    /// `user:password@` are redacted; a fragment is dropped.
    pub fn target<'a>(&self, target: &'a str) -> Cow<'a, str> {
        if self.level == Level::Off {
            return Cow::Borrowed(target);
        }
        let without_fragment = target.split_once('#').map_or(target, |(t, _)| t);
        let (path, query) = match without_fragment.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (without_fragment, None),
        };
        let path = self.userinfo(path);
        let query = query.map(|q| self.query(q));
        if matches!(path, Cow::Borrowed(_))
            && query.as_ref().is_none_or(|q| matches!(q, Cow::Borrowed(_)))
            && without_fragment.len() == target.len()
        {
            return Cow::Borrowed(target);
        }
        let mut out = path.into_owned();
        if let Some(q) = query {
            out.push('?');
            out.push_str(&q);
        }
        Cow::Owned(out)
    }

    /// `scheme://user:password@host/…` with the credentials redacted.
    fn userinfo<'a>(&self, url: &'a str) -> Cow<'a, str> {
        let Some((scheme, rest)) = url.split_once("://") else { return Cow::Borrowed(url) };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => Cow::Owned(format!("{scheme}://{REDACTED}{}", &rest[at..])),
            None => Cow::Borrowed(url),
        }
    }

    /// The host's second line, for plugins that do not redact: the
    /// header rules on every map field named `*headers`, `*trailers` or
    /// `*metadata`, and the query rules on `url`, `query_string` and a
    /// summary that is a request target.
    pub fn scrub_record(&self, record: &mut Record) {
        if self.level == Level::Off {
            return;
        }
        if record.summary.contains('?') || record.summary.contains("://") {
            // A request target anywhere in it (`GET /x?token=…`).
            let words: Vec<Cow<'_, str>> = record
                .summary
                .split(' ')
                .map(|w| if w.contains('?') || w.contains("://") { self.target(w) } else { Cow::Borrowed(w) })
                .collect();
            if words.iter().any(|w| matches!(w, Cow::Owned(_))) {
                record.summary = words.join(" ");
            }
        }
        for (key, value) in record.fields.iter_mut() {
            if key.ends_with("headers") || key.ends_with("trailers") || key.ends_with("metadata") {
                if let Value::Map(m) = value {
                    for (name, v) in m.iter_mut() {
                        self.scrub_header(name, v);
                    }
                }
            } else if matches!(key, "url" | "uri" | "target" | "path") {
                if let Value::Str(s) = value
                    && let Cow::Owned(t) = self.target(s)
                {
                    *s = t;
                }
            } else if (key == "query_string" || key == "query")
                && let Value::Str(s) = value
                && let Cow::Owned(q) = self.query(s)
            {
                *s = q;
            }
        }
    }

    fn scrub_header(&self, name: &str, value: &mut Value) {
        match value {
            Value::Str(s) => {
                if let Cow::Owned(r) = self.header_value(name, s)
                    && r != *s
                {
                    *s = r;
                }
            }
            Value::List(items) => items.iter_mut().for_each(|v| self.scrub_header(name, v)),
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Map(_) => {
                if self.secret_header(name) {
                    *value = Value::from(REDACTED);
                }
            }
        }
    }
}

/// Whether a lower-case header name contains `token`, `secret`, `key`,
/// `pass`, `auth` or `session`. One pass over the name's bytes: most bytes
/// start no word and cost one jump; `str::contains` per word would set up
/// a substring searcher each time (that setup was an eighth of the HTTP
/// plugin's time).
fn has_secret_word(lower: &[u8]) -> bool {
    (0..lower.len()).any(|i| {
        let rest = &lower[i..];
        match lower[i] {
            b't' => rest.starts_with(b"token"),
            b's' => rest.starts_with(b"secret") || rest.starts_with(b"session"),
            b'k' => rest.starts_with(b"key"),
            b'p' => rest.starts_with(b"pass"),
            b'a' => rest.starts_with(b"auth"),
            _ => false,
        }
    })
}

/// `name`'s bytes in ASCII lower case, in `buf` when they fit (header
/// names nearly always do, so checking a header allocates nothing). Bytes,
/// not `str`: every name compared against is ASCII, so nothing needs the
/// copy to be checked as UTF-8 again.
fn lowered<'a>(name: &'a str, buf: &'a mut [u8; 64]) -> Cow<'a, [u8]> {
    let name = name.as_bytes();
    match buf.get_mut(..name.len()) {
        Some(out) => {
            for (o, b) in out.iter_mut().zip(name) {
                *o = b.to_ascii_lowercase();
            }
            Cow::Borrowed(out)
        }
        None => Cow::Owned(name.to_ascii_lowercase()),
    }
}

/// `a=1; b=2` as `a=[REDACTED]; b=[REDACTED]`, idempotent.
fn cookie_names(value: &str, sep: &str) -> String {
    let mut out = String::new();
    for (i, pair) in value.split(';').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        match pair.split_once('=') {
            Some((name, _)) => {
                out.push_str(name.trim());
                out.push('=');
                out.push_str(REDACTED);
            }
            None => out.push_str(REDACTED),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Policy {
        Policy::default()
    }

    #[test]
    fn secret_words_are_found_anywhere_in_a_name() {
        for name in ["x-api-key", "x-auth-token", "passwd", "keyring", "x-session", "secret", "tokens", "a", "", "x-k"]
        {
            let by_search = SECRET_WORDS.iter().any(|w| name.contains(w));
            assert_eq!(has_secret_word(name.as_bytes()), by_search, "{name}");
        }
        for name in ["accept", "content-type", "user-agent", "host", "x-request-id", "x-pas", "sessio"] {
            assert!(!has_secret_word(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn secret_headers_any_case_and_by_word() {
        let p = Policy::new(Level::Default, &["X-Tenant".to_string()]);
        for name in ["Authorization", "COOKIE", "x-api-key", "X-Auth-Token", "Session-Id", "x-tenant", "X-Password"] {
            assert!(p.secret_header(name), "{name}");
        }
        for name in ["content-type", "host", ":authority", "user-agent", "accept"] {
            assert!(!p.secret_header(name), "{name}");
        }
        assert!(!Policy::new(Level::Off, &[]).secret_header("authorization"));
    }

    #[test]
    fn header_values_keep_scheme_and_cookie_names() {
        let p = default();
        assert_eq!(p.header_value("Authorization", "Bearer abc.def"), "Bearer [REDACTED]");
        assert_eq!(p.header_value("authorization", "Basic dXNlcjpwYXNz"), "Basic [REDACTED]");
        assert_eq!(p.header_value("authorization", "opaque"), "[REDACTED]");
        assert_eq!(p.header_value("Cookie", "sid=s3cr3t; theme=dark"), "sid=[REDACTED]; theme=[REDACTED]");
        assert_eq!(p.header_value("Set-Cookie", "sid=s3cr3t; Path=/; HttpOnly"), "sid=[REDACTED]; Path=/; HttpOnly");
        // Two cookies joined into one value: the second is not an attribute.
        assert_eq!(p.header_value("Set-Cookie", "a=1; Path=/, b=SECRET"), "a=[REDACTED]; [REDACTED]");
        assert_eq!(p.header_value("Location", "/cb?code=abc&state=x"), "/cb?code=[REDACTED]&state=[REDACTED]");
        assert_eq!(p.header_value("Referer", "http://u:pw@h/p?t=1"), "http://[REDACTED]@h/p?t=[REDACTED]");
        assert_eq!(p.header_value("Sec-WebSocket-Protocol", "trawl, trawl.bearer.c2VjcmV0"), "trawl, [REDACTED]");
        let strict = Policy::new(Level::Strict, &[]);
        assert_eq!(strict.header_value("X-Request-Id", "abc"), "[REDACTED]");
        assert_eq!(strict.header_value("Content-Type", "text/html"), "text/html");
        assert_eq!(p.header_value("X-Api-Key", "k-123"), "[REDACTED]");
        assert_eq!(p.header_value("Accept", "*/*"), "*/*");
    }

    #[test]
    fn targets_keep_paths_and_names() {
        let p = default();
        assert_eq!(p.target("/a/b?user=alice&page=2"), "/a/b?user=[REDACTED]&page=[REDACTED]");
        assert_eq!(p.target("/a/b?flag&x="), "/a/b?flag&x=");
        assert_eq!(p.target("/a?eyJhbGciOi1234"), "/a?[REDACTED]");
        assert_eq!(p.target("/a?debug&AbCdEf0123456789xyz"), "/a?debug&[REDACTED]");
        assert_eq!(p.target("/plain"), "/plain");
        assert!(matches!(p.target("/plain"), Cow::Borrowed(_)));
        assert_eq!(p.target("http://bob:hunter2@example.com/x?t=1"), "http://[REDACTED]@example.com/x?t=[REDACTED]");
        assert_eq!(p.target("/x#frag"), "/x");
        assert_eq!(Policy::new(Level::Off, &[]).target("/x?t=1"), "/x?t=1");
    }

    #[test]
    fn the_second_line_scrubs_what_it_recognises_and_is_idempotent() {
        let p = default();
        let headers: crate::Fields = [("X-Api-Key", Value::from("k-123")), ("Accept", Value::from("*/*"))].into();
        let mut r = Record { summary: "GET /q?token=abc".into(), ..Record::default() };
        r.fields.insert("path", "/q?token=abc");
        r.fields.insert("request_headers", headers);
        r.fields.insert("url", "/q?token=abc");
        r.fields.insert("query_string", "token=abc");
        p.scrub_record(&mut r);
        let once = r.clone();
        p.scrub_record(&mut r);
        assert_eq!(r, once);
        assert_eq!(r.summary, "GET /q?token=[REDACTED]");
        assert_eq!(r.fields["path"], Value::from("/q?token=[REDACTED]"));
        assert_eq!(r.fields["url"], Value::from("/q?token=[REDACTED]"));
        assert_eq!(r.fields["query_string"], Value::from("token=[REDACTED]"));
        let Value::Map(h) = &r.fields["request_headers"] else { panic!() };
        assert_eq!(h["X-Api-Key"], Value::from(REDACTED));
        assert_eq!(h["Accept"], Value::from("*/*"));
    }
}
