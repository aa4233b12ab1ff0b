//! Virtual hosts on the L7 map: one server `IP:port` (an ingress, a
//! gateway) serving several hosts gets one edge per host, told apart by
//! the records' `host` field (HTTP/1's `Host`, HTTP/2's and gRPC's
//! `:authority`). A server that only ever served one host keeps one edge,
//! as before: hosts split edges only where they tell services apart.

use crate::record::L7Record;
use std::collections::HashMap;
use std::hash::Hash;

/// Longest host name kept (DNS's limit); longer ones count as no host.
const MAX_HOST: usize = 253;
/// Hosts one server gets an edge each for at most; the rest share
/// [`OTHER_HOSTS`]' edge, so clients sending made-up `Host` headers
/// cannot grow the map without bound.
pub const MAX_HOSTS_PER_SERVER: usize = 64;
/// The edge of a server's hosts beyond [`MAX_HOSTS_PER_SERVER`].
pub const OTHER_HOSTS: &str = "(other hosts)";

/// The virtual host a record asked for, if any: its `host` field
/// normalised (see [`normalise`]).
pub fn record_host(r: &L7Record) -> Option<String> {
    normalise(r.fields.get("host")?.as_str()?)
}

/// A `Host` or `:authority` as the name of a virtual host: lower case,
/// without its port or trailing dot, and a Kubernetes Service's cluster
/// name (`web.shop.svc.cluster.local`) as its short one (`web`). An
/// address (`10.0.0.7:8080`, `[fd00::1]`) names no virtual host: clients
/// that dial a server by address say nothing of which host they want.
/// So does a value no host name can be (too long, or with `|`, which edge
/// ids use as a separator).
pub fn normalise(raw: &str) -> Option<String> {
    let h = raw.trim();
    let h = match h.strip_prefix('[') {
        // [v6] or [v6]:port: an address.
        Some(_) => return None,
        None => match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => name,
            Some(_) => return None,
            None => h,
        },
    };
    let h = h.trim_end_matches('.');
    if h.is_empty() || h.len() > MAX_HOST || h.contains('|') || h.chars().any(char::is_control) {
        return None;
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let h = h.to_ascii_lowercase();
    match h.split('.').position(|label| label == "svc") {
        Some(at) if at > 0 => h.split('.').next().map(str::to_string),
        _ => Some(h),
    }
}

/// An L7 edge's id: `source|target|protocol`, and `|host` for an edge of
/// one virtual host.
pub fn l7_edge_id(source: &str, target: &str, protocol: &str, host: Option<&str>) -> String {
    match host {
        Some(h) => format!("{source}|{target}|{protocol}|{h}"),
        None => format!("{source}|{target}|{protocol}"),
    }
}

/// Which hosts a server has been asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    One(String),
    /// The hosts with an edge of their own (at most
    /// [`MAX_HOSTS_PER_SERVER`]).
    Many(std::collections::HashSet<String>),
}

/// What [`Hosts::note`] learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// The server has served this one host so far: no split.
    Single,
    /// The server just served a second host; until now every request with
    /// a host asked for `first`.
    BecameMany { first: String },
    /// The server serves several hosts: split.
    Many,
    /// The server serves more hosts than it gets edges for: this one
    /// goes to [`OTHER_HOSTS`]' edge.
    Other,
}

/// The hosts each server (map node) has been asked for: one, or several.
/// Two words per server, whatever the hosts.
#[derive(Clone, Debug)]
pub struct Hosts<K> {
    seen: HashMap<K, Seen>,
}

impl<K> Default for Hosts<K> {
    fn default() -> Self {
        Hosts { seen: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> Hosts<K> {
    /// `server` was asked for `host`.
    pub fn note(&mut self, server: &K, host: &str) -> Note {
        match self.seen.get_mut(server) {
            None => {
                self.seen.insert(server.clone(), Seen::One(host.to_string()));
                Note::Single
            }
            Some(Seen::One(h)) if h == host => Note::Single,
            Some(seen @ Seen::One(_)) => {
                let hosts = [host.to_string()].into_iter().collect();
                let Seen::One(first) = std::mem::replace(seen, Seen::Many(hosts)) else { return Note::Many };
                if let Seen::Many(hosts) = seen {
                    hosts.insert(first.clone());
                }
                Note::BecameMany { first }
            }
            Some(Seen::Many(hosts)) if hosts.contains(host) => Note::Many,
            Some(Seen::Many(hosts)) if hosts.len() < MAX_HOSTS_PER_SERVER => {
                hosts.insert(host.to_string());
                Note::Many
            }
            Some(Seen::Many(_)) => Note::Other,
        }
    }

    /// Whether `server` has served several hosts.
    pub fn is_many(&self, server: &K) -> bool {
        matches!(self.seen.get(server), Some(Seen::Many(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_splits_on_its_second_host() {
        let mut h = Hosts::default();
        assert_eq!(h.note(&1, "a.example"), Note::Single);
        assert_eq!(h.note(&1, "a.example"), Note::Single);
        assert_eq!(h.note(&2, "b.example"), Note::Single, "another server");
        assert_eq!(h.note(&1, "b.example"), Note::BecameMany { first: "a.example".into() });
        assert_eq!(h.note(&1, "a.example"), Note::Many);
        assert!(h.is_many(&1) && !h.is_many(&2));
        for i in 2..MAX_HOSTS_PER_SERVER {
            assert_eq!(h.note(&1, &format!("h{i}.example")), Note::Many);
        }
        assert_eq!(h.note(&1, "one-too-many.example"), Note::Other, "bounded");
        assert_eq!(h.note(&1, "b.example"), Note::Many, "the hosts kept keep their edges");
        assert_eq!(l7_edge_id("a", "b", "http", Some("x")), "a|b|http|x");
    }

    #[test]
    fn hosts_are_names_not_addresses() {
        for (raw, want) in [
            ("Shop.Example.COM", Some("shop.example.com")),
            ("shop.example.com:8443", Some("shop.example.com")),
            ("shop.example.com.", Some("shop.example.com")),
            ("web.shop.svc.cluster.local:8080", Some("web")),
            ("web.shop.svc", Some("web")),
            ("web", Some("web")),
            ("10.213.0.10", None),
            ("10.213.0.10:8080", None),
            ("[fd00::1]:80", None),
            ("fd00::1", None),
            ("a|b", None),
            ("", None),
        ] {
            assert_eq!(normalise(raw).as_deref(), want, "{raw}");
        }
        assert_eq!(l7_edge_id("a", "b", "http", None), "a|b|http");
    }
}
