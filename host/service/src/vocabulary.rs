//! The names a display filter may use: KFL2's own variables, a flag per
//! protocol, and the fields the plugins declare. A name outside them would
//! match nothing (an unbound variable fails every record) and empty the
//! map with no reason given; it is refused instead, with the closest
//! known names. Plugins that do not declare their fields leave the
//! vocabulary open, and then nothing is refused.

use std::collections::BTreeSet;

/// KFL2's variables (see `filter::variables`), and CEL's type names.
pub const BUILTIN: &[&str] = &[
    "src",
    "dst",
    "src_resolution_status",
    "dst_resolution_status",
    "namespaces",
    "pods",
    "services",
    "node_name",
    "tls",
    "tls_sni",
    "protocol",
    "tcp",
    "udp",
    "method",
    "path",
    "url",
    "authority",
    "summary",
    "status_code",
    "error",
    "elapsed_time",
    "timestamp",
    "request_size",
    "response_size",
    // CEL's type identifiers (`type(x) == int`).
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// The names a filter may use now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vocabulary {
    names: BTreeSet<String>,
    /// Plugins are known and every one declared its fields: a name
    /// outside is a mistake.
    closed: bool,
}

impl Vocabulary {
    /// From the protocols of the loaded plugins and the fields each
    /// declares (`None`: it declares none, and any name may be its).
    pub fn new<'a>(plugins: impl IntoIterator<Item = (&'a str, Option<&'a [String]>)>) -> Self {
        let mut names: BTreeSet<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
        // No plugins known yet (a hub before its workers): nothing to go by.
        let mut closed = false;
        for (i, (protocol, fields)) in plugins.into_iter().enumerate() {
            closed |= i == 0;
            names.insert(protocol.to_string());
            match fields {
                Some(fields) => names.extend(fields.iter().cloned()),
                None => closed = false,
            }
        }
        Vocabulary { names, closed }
    }

    /// Adds names (protocols of the legend) without opening or closing it.
    pub fn with_names(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.names.extend(names);
        self
    }

    /// A vocabulary that takes any name.
    pub fn open() -> Self {
        Vocabulary { names: BTreeSet::new(), closed: false }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Why `name` is not a variable, with the closest known names; `None`
    /// when it is one (or the vocabulary is open).
    pub fn unknown(&self, name: &str) -> Option<String> {
        if !self.closed || self.names.contains(name) {
            return None;
        }
        let mut close: Vec<(f64, &str)> = self
            .names
            .iter()
            .map(|known| (likeness(name, known), known.as_str()))
            .filter(|(score, _)| *score >= 0.6)
            .collect();
        close.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let close: Vec<String> = close.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
        Some(match close.as_slice() {
            [] => format!("unknown variable `{name}`: no plugin declares it"),
            [one] => format!("unknown variable `{name}`; did you mean {one}?"),
            many => format!("unknown variable `{name}`; did you mean one of {}?", many.join(", ")),
        })
    }
}

/// How alike two names are, 0 to 1: one less the share of edits between
/// them (Damerau-Levenshtein), or 0.9 when one holds the other and is at
/// least 4 letters long (`rcode` in `dns_rcode_name`, not `dns`).
fn likeness(typed: &str, known: &str) -> f64 {
    let (short, long) = if typed.len() < known.len() { (typed, known) } else { (known, typed) };
    let held = short.len() >= 4 && long.contains(short);
    strsim::normalized_damerau_levenshtein(typed, known).max(if held { 0.9 } else { 0.0 })
}

/// The names an expression reads that no comprehension in it binds.
pub fn free_names(e: &cel::parser::Expression) -> Vec<String> {
    use cel::common::ast::Expr;
    let (mut used, mut bound) = (Vec::new(), BTreeSet::new());
    // Iterative: a deep expression cannot overflow the stack here.
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match &e.expr {
            Expr::Ident(name) => used.push(name.clone()),
            Expr::Comprehension(c) => {
                bound.insert(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.insert(c.accu_var.clone());
            }
            _ => {}
        }
        stack.extend(crate::filter::children(e).into_iter().map(|(c, _)| c));
    }
    let mut seen = BTreeSet::new();
    used.into_iter().filter(|n| !bound.contains(n) && seen.insert(n.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_and_http() -> Vocabulary {
        let dns = vec!["dns_rcode_name".to_string(), "dns_questions".into(), "dns_answers".into()];
        let http = vec!["request_headers".to_string(), "host".into()];
        Vocabulary::new([("dns", Some(dns.as_slice())), ("http", Some(http.as_slice()))])
    }

    #[test]
    fn a_misspelt_name_is_refused_with_the_closest_ones() {
        let v = dns_and_http();
        assert_eq!(v.unknown("dns_rcode_name"), None);
        assert_eq!(v.unknown("http"), None, "protocols are flags");
        assert_eq!(v.unknown("status_code"), None, "KFL2's own");
        assert_eq!(v.unknown("dns_rcode").unwrap(), "unknown variable `dns_rcode`; did you mean `dns_rcode_name`?");
        assert_eq!(v.unknown("rcode").unwrap(), "unknown variable `rcode`; did you mean `dns_rcode_name`?");
        assert!(v.unknown("statuscode").unwrap().contains("`status_code`"));
        assert_eq!(v.unknown("zzz").unwrap(), "unknown variable `zzz`: no plugin declares it");
    }

    #[test]
    fn a_plugin_that_declares_nothing_leaves_every_name_open() {
        let dns = ["dns_rcode_name".to_string()];
        let plugins = vec![("dns", Some(&dns[..])), ("memo", None)];
        assert_eq!(Vocabulary::new(plugins).unknown("memo_key"), None);
        assert_eq!(Vocabulary::open().unknown("anything"), None);
        assert_eq!(Vocabulary::new([]).unknown("anything"), None, "no plugins known yet");
    }

    #[test]
    fn comprehension_variables_are_bound_not_read() {
        let p = cel::Program::compile("dns_answers.exists(a, a.ttl > 60) && http && size(pods) > 0").unwrap();
        let mut names = free_names(p.expression());
        names.sort();
        assert_eq!(names, ["dns_answers", "http", "pods"]);
    }
}
