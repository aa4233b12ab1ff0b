//! Who may use the API: bearer tokens for reading and for changing what is
//! dissected, and, when no token is configured on loopback, a `Host` check
//! that stops DNS rebinding.
//!
//! - `--api-token` grants reads (maps, records, details, plugins, metrics,
//!   health); `--admin-token` grants reads and writes (capture filters).
//! - Clients send `Authorization: Bearer <token>`. A browser's WebSocket
//!   cannot set that header, so the WebSocket also takes the token in its
//!   subprotocol list, as `trawl.bearer.<base64url(token)>` next to `trawl`
//!   (Kubernetes' API server does the same): never in the URL, so tokens
//!   stay out of access logs.
//! - Tokens are compared in constant time, as SHA-256 digests, so neither
//!   their bytes nor their length leak through timing.
//! - `/healthz` and `/readyz` stay open and say nothing about traffic.

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// The WebSocket subprotocol the UI speaks; the server echoes it.
pub const WS_PROTOCOL: &str = "trawl";
/// Prefix of the subprotocol that carries a token.
pub const WS_BEARER_PREFIX: &str = "trawl.bearer.";

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Read,
    Admin,
}

/// Why a request is refused: a status and a reason that names no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No valid token (401).
    Unauthenticated,
    /// A read token on a write (403).
    Forbidden,
    /// A `Host` that is not this server's (403): DNS rebinding.
    WrongHost,
}

impl warp::reject::Reject for Denied {}

impl Denied {
    pub fn status(&self) -> warp::http::StatusCode {
        match self {
            Denied::Unauthenticated => warp::http::StatusCode::UNAUTHORIZED,
            Denied::Forbidden | Denied::WrongHost => warp::http::StatusCode::FORBIDDEN,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthenticated => "a valid token is needed: Authorization: Bearer <token>",
            Denied::Forbidden => "this token may read, not change: use the admin token",
            Denied::WrongHost => "the Host header does not name this server (see --allowed-host)",
        }
    }
}

/// Why the API cannot be served as configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(
        "refusing to serve the API on {0} without a token: anyone who can reach it could read every request and \
         retarget dissection. Set --api-token (or TRAWL_API_TOKEN) and --admin-token (or TRAWL_ADMIN_TOKEN), \
         listen on loopback, or pass --insecure-no-auth"
    )]
    OpenOnNetwork(SocketAddr),
    #[error("--api-token and --admin-token must differ: a read token would grant writes")]
    SameTokens,
}

/// The API's access rules.
#[derive(Clone, Debug)]
pub struct Access {
    read: Option<[u8; 32]>,
    admin: Option<[u8; 32]>,
    /// Host names (with or without a port) accepted when no token is set.
    hosts: Vec<String>,
    listen: SocketAddr,
    /// Open off loopback (`--insecure-no-auth`): the operator chose
    /// reachability, so the Host check would only break it.
    open_network: bool,
}

/// A secret as it is kept and compared: its SHA-256 digest, so that
/// comparing leaks neither its bytes nor its length.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether two digests are equal, in constant time.
pub fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

impl Access {
    /// Checks the configuration: on a non-loopback address, a token is
    /// needed unless `insecure_no_auth` says otherwise.
    pub fn new(
        listen: SocketAddr,
        read: Option<String>,
        admin: Option<String>,
        allowed_hosts: Vec<String>,
        insecure_no_auth: bool,
    ) -> Result<Self, AccessError> {
        let (read, admin) = (read.filter(|t| !t.is_empty()), admin.filter(|t| !t.is_empty()));
        if read.is_some() && read == admin {
            return Err(AccessError::SameTokens);
        }
        if read.is_none() && admin.is_none() && !listen.ip().is_loopback() && !insecure_no_auth {
            return Err(AccessError::OpenOnNetwork(listen));
        }
        Ok(Access {
            read: read.as_deref().map(digest),
            admin: admin.as_deref().map(digest),
            hosts: allowed_hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            listen,
            open_network: !listen.ip().is_loopback(),
        })
    }

    /// Open on loopback, with no token: what tests and `trawl demo` use.
    pub fn loopback(listen: SocketAddr) -> Self {
        Access { read: None, admin: None, hosts: Vec::new(), listen, open_network: false }
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        self.read.is_some() || self.admin.is_some()
    }

    /// Where the API listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The address the server listens on, once it is bound (port 0 known).
    pub fn set_listen(&mut self, listen: SocketAddr) {
        self.listen = listen;
    }

    /// Whether a request with these headers may do what it `need`s.
    pub fn check(
        &self,
        need: Need,
        authorization: Option<&str>,
        ws_protocols: Option<&str>,
        host: Option<&str>,
    ) -> Result<(), Denied> {
        if !self.has_tokens() {
            return if self.open_network || self.host_allowed(host) { Ok(()) } else { Err(Denied::WrongHost) };
        }
        let token = bearer(authorization).or_else(|| ws_protocols.and_then(ws_bearer));
        let Some(token) = token else { return Err(Denied::Unauthenticated) };
        let given = digest(&token);
        let is_admin = self.admin.as_ref().is_some_and(|a| equal(a, &given));
        let is_reader = self.read.as_ref().is_some_and(|r| equal(r, &given));
        match (need, is_admin, is_reader) {
            (_, true, _) | (Need::Read, false, true) => Ok(()),
            (Need::Admin, false, true) => Err(Denied::Forbidden),
            (_, false, false) => Err(Denied::Unauthenticated),
        }
    }

    /// The listen address, `localhost` and loopback names, and the
    /// `--allowed-host` names, with this server's port or none.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host.map(str::to_ascii_lowercase) else { return true };
        let port = self.listen.port().to_string();
        let (name, given_port) = match host.rsplit_once(':') {
            Some((n, p)) if !n.ends_with(']') || host.starts_with('[') => match p.parse::<u16>() {
                Ok(_) => (n.to_string(), Some(p.to_string())),
                Err(_) => (host.clone(), None),
            },
            _ => (host.clone(), None),
        };
        let name = name.trim_start_matches('[').trim_end_matches(']').to_string();
        if self.hosts.iter().any(|h| *h == host || *h == name) {
            return true;
        }
        if given_port.as_ref().is_some_and(|p| *p != port) {
            return false;
        }
        let listen_ip = self.listen.ip().to_string();
        name == listen_ip || matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(header: Option<&str>) -> Option<String> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
}

/// The token in a `Sec-WebSocket-Protocol` list.
fn ws_bearer(protocols: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = protocols.split(',').map(str::trim).find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether a `Sec-WebSocket-Protocol` list offers [`WS_PROTOCOL`].
pub fn offers_ws_protocol(protocols: Option<&str>) -> bool {
    protocols.is_some_and(|p| p.split(',').any(|x| x.trim() == WS_PROTOCOL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tokens() -> Access {
        Access::new(addr("0.0.0.0:8899"), Some("reader".into()), Some("admin".into()), vec![], false).unwrap()
    }

    #[test]
    fn tokens_grant_what_they_should() {
        let a = tokens();
        assert_eq!(a.check(Need::Read, None, None, None), Err(Denied::Unauthenticated));
        assert_eq!(a.check(Need::Read, Some("Bearer wrong"), None, None), Err(Denied::Unauthenticated));
        assert_eq!(a.check(Need::Read, Some("Bearer reader"), None, None), Ok(()));
        assert_eq!(a.check(Need::Admin, Some("Bearer reader"), None, None), Err(Denied::Forbidden));
        assert_eq!(a.check(Need::Admin, Some("bearer admin"), None, None), Ok(()));
        assert_eq!(a.check(Need::Read, Some("Basic admin"), None, None), Err(Denied::Unauthenticated));
    }

    #[test]
    fn the_websocket_takes_the_token_in_its_subprotocols() {
        let a = tokens();
        // base64url("reader") = cmVhZGVy
        assert_eq!(a.check(Need::Read, None, Some("trawl, trawl.bearer.cmVhZGVy"), None), Ok(()));
        assert_eq!(a.check(Need::Read, None, Some("trawl"), None), Err(Denied::Unauthenticated));
        assert!(offers_ws_protocol(Some("trawl.bearer.x, trawl")));
        assert!(!offers_ws_protocol(Some("trawl.bearer.x")));
    }

    #[test]
    fn no_token_is_refused_off_loopback_unless_insisted() {
        assert_eq!(
            Access::new(addr("0.0.0.0:8899"), None, None, vec![], false).unwrap_err(),
            AccessError::OpenOnNetwork(addr("0.0.0.0:8899"))
        );
        assert!(Access::new(addr("0.0.0.0:8899"), None, None, vec![], true).is_ok());
        assert!(Access::new(addr("127.0.0.1:8899"), None, None, vec![], false).is_ok());
        assert_eq!(
            Access::new(addr("0.0.0.0:1"), Some("x".into()), Some("x".into()), vec![], false).unwrap_err(),
            AccessError::SameTokens
        );
    }

    #[test]
    fn open_on_loopback_only_for_its_own_host_names() {
        let a = Access::new(addr("127.0.0.1:8899"), None, None, vec!["trawl.local".into()], false).unwrap();
        for ok in ["127.0.0.1:8899", "localhost:8899", "LOCALHOST", "[::1]:8899", "trawl.local:8899", "trawl.local"] {
            assert_eq!(a.check(Need::Admin, None, None, Some(ok)), Ok(()), "{ok}");
        }
        for bad in ["evil.example:8899", "evil.example", "127.0.0.1:9999", "localhost.evil.example:8899"] {
            assert_eq!(a.check(Need::Read, None, None, Some(bad)), Err(Denied::WrongHost), "{bad}");
        }
    }
}
