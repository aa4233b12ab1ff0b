//! KFL2, trawl's display filter language: CEL (via the `cel` crate) over
//! Kubeshark's variable names. A filter is compiled once per subscription
//! and evaluated per L7 record; a filter that does not evaluate to `true`
//! (false, an error such as a missing field, or a non-boolean) drops the
//! record, as in Kubeshark.
//!
//! Variables: `src`/`dst` (`ip`, `port`, `name`, `namespace`, `kind`,
//! `node`, `pod.name`, `pod.namespace`, `service.name`), `namespaces`,
//! `pods`, `services`, `node_name`, `protocol`, a flag named after every
//! loaded plugin's protocol (`http`, `dns`, … and any plugin's own, such as
//! `memo`: true on that protocol's records), `tcp`, `udp`, the record's `method`, `path`,
//! `url`, `summary`, `status_code`, `error`, `elapsed_time` (µs),
//! `timestamp`, `request_size`, `response_size`, and every field the
//! plugin reported (`grpc_status`, `redis_key`, …) under its own name.
//! Functions beyond CEL's standard ones: `map_get(map, key)` and `now()`.

use cel::objects::Key;
use cel::{Context, Env, Program, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use trawl_core::l7map::LegendEntry;
use trawl_core::record::{L7Record, RecordEndpoint};
use trawl_sdk::Value as FieldValue;

/// Longest filter accepted.
pub const MAX_FILTER_LEN: usize = 4096;
/// Most nodes a filter's syntax tree may have.
pub const MAX_FILTER_NODES: usize = 512;
/// Deepest nesting of comprehensions (`all`, `exists`, `exists_one`,
/// `map`, `filter`): each level multiplies the work per record.
pub const MAX_COMPREHENSION_NESTING: usize = 2;

/// The sub-expressions of `e`, each with whether it is a comprehension's
/// body (runs once per element) rather than evaluated once. Shared by
/// every walk over a filter's tree.
pub(crate) fn children(e: &cel::parser::Expression) -> Vec<(&cel::parser::Expression, bool)> {
    use cel::common::ast::{EntryExpr, Expr};
    let mut out = Vec::new();
    match &e.expr {
        Expr::Call(c) => {
            out.extend(c.target.iter().map(|t| (t.as_ref(), false)));
            out.extend(c.args.iter().map(|a| (a, false)));
        }
        Expr::Comprehension(c) => {
            out.push((&c.iter_range, false));
            out.extend([&c.accu_init, &c.loop_cond, &c.loop_step, &c.result].map(|x| (x, true)));
        }
        Expr::List(l) => out.extend(l.elements.iter().map(|x| (x, false))),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(me) = &entry.expr {
                    out.extend([(&me.key, false), (&me.value, false)]);
                }
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => out.push((&f.value, false)),
                    EntryExpr::MapEntry(me) => out.extend([(&me.key, false), (&me.value, false)]),
                }
            }
        }
        Expr::Select(sel) => out.push((&sel.operand, false)),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
    out
}

/// Size and comprehension nesting of an expression: what bounds the work
/// one evaluation can do (with no loops but comprehensions, a tree of `n`
/// nodes and nesting `k` over lists of `m` elements does about `n·m^k`).
fn cost(e: &cel::parser::Expression) -> (usize, usize) {
    let mut nodes = 0;
    let mut deepest = 0;
    // Iterative, so a deep expression cannot overflow the stack here.
    let mut stack = vec![(e, 0usize)];
    while let Some((e, nesting)) = stack.pop() {
        nodes += 1;
        deepest = deepest.max(nesting);
        stack.extend(children(e).into_iter().map(|(c, body)| (c, nesting + usize::from(body))));
    }
    (nodes, deepest)
}

/// A filter that did not compile: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{message} (line {line}, column {column})")]
pub struct FilterError {
    pub message: String,
    pub line: u32,
    pub column: u32,
    /// Byte offset into the filter text.
    pub position: usize,
}

/// A compiled display filter. The empty filter matches everything.
#[derive(Clone)]
pub struct Filter {
    source: String,
    program: Option<Arc<Program>>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("source", &self.source).finish()
    }
}

/// The root context: the standard library plus trawl's functions. Built
/// once; per-record scopes are children of it.
fn root() -> &'static Context<'static, 'static> {
    static ROOT: OnceLock<Context<'static, 'static>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut ctx = Context::with_env(Arc::new(Env::stdlib()));
        // Registration fails only on a name the standard library already
        // has, which these are not.
        let _ = ctx.add_function("map_get", |m: Value, k: Arc<String>| -> Value {
            match m {
                Value::Map(m) => m.map.get(&Key::from(k)).cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            }
        });
        let _ = ctx.add_function("now", || -> chrono::DateTime<chrono::FixedOffset> { chrono::Utc::now().into() });
        ctx
    })
}

/// Where `word` first stands on its own in `source` (not inside a longer
/// name or a string).
fn word_at(source: &str, word: &str) -> Option<usize> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = source[..at].chars().next_back();
        let after = source[at + word.len()..].chars().next();
        let quotes = source[..at].matches(['"', '\'']).count();
        !before.is_some_and(|c| is_name(c) || c == '.') && !after.is_some_and(is_name) && quotes.is_multiple_of(2)
    })
}

fn byte_offset(source: &str, line: u32, column: u32) -> usize {
    let mut offset = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            return offset + l.char_indices().nth(column.saturating_sub(1) as usize).map_or(l.len(), |(at, _)| at);
        }
        offset += l.len();
    }
    source.len()
}

impl Filter {
    pub fn all() -> Self {
        Filter { source: String::new(), program: None }
    }

    pub fn compile(source: &str) -> Result<Self, FilterError> {
        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Ok(Self::all());
        }
        if source.len() > MAX_FILTER_LEN {
            return Err(FilterError {
                message: format!("filter longer than {MAX_FILTER_LEN} bytes"),
                line: 1,
                column: 1,
                position: 0,
            });
        }
        match Program::compile(source) {
            Ok(p) => {
                let (nodes, nesting) = cost(p.expression());
                let refuse = |message: String| Err(FilterError { message, line: 1, column: 1, position: 0 });
                if nodes > MAX_FILTER_NODES {
                    return refuse(format!("filter too large: {nodes} terms, at most {MAX_FILTER_NODES}"));
                }
                if nesting > MAX_COMPREHENSION_NESTING {
                    return refuse(format!(
                        "filter too costly: comprehensions (all, exists, map, filter) nested {nesting} deep, at most {MAX_COMPREHENSION_NESTING}"
                    ));
                }
                Ok(Filter { source: source.to_string(), program: Some(Arc::new(p)) })
            }
            Err(errors) => {
                let first = errors.errors.first();
                let (line, column) = first.map_or((1, 1), |e| (e.pos.0.max(1) as u32, e.pos.1.max(1) as u32));
                let message = first.map_or_else(|| "invalid filter".to_string(), |e| e.msg.clone());
                Err(FilterError { message, line, column, position: byte_offset(source, line, column) })
            }
        }
    }

    /// As [`Filter::compile`], refusing a variable outside `vocabulary`
    /// (see [`crate::vocabulary`]), with the closest known ones.
    pub fn compile_in(source: &str, vocabulary: &crate::vocabulary::Vocabulary) -> Result<Self, FilterError> {
        let filter = Self::compile(source)?;
        let Some(program) = filter.program.as_ref().filter(|_| vocabulary.is_closed()) else { return Ok(filter) };
        for name in crate::vocabulary::free_names(program.expression()) {
            if let Some(message) = vocabulary.unknown(&name) {
                let position = word_at(source, &name).unwrap_or(0);
                let before = &source[..position];
                let line = before.matches('\n').count() as u32 + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
                return Err(FilterError { message, line, column, position });
            }
        }
        Ok(filter)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_all(&self) -> bool {
        self.program.is_none()
    }

    /// Whether the record passes. `protocols` are the loaded plugins'
    /// protocols (the legend): each is a flag, true on its own records.
    pub fn matches(&self, r: &L7Record, protocols: &[LegendEntry]) -> bool {
        let Some(program) = &self.program else { return true };
        let mut ctx = root().new_inner_scope();
        for (name, value) in variables(r, protocols) {
            ctx.add_variable_from_value(name, value);
        }
        matches!(program.execute(&ctx), Ok(Value::Bool(true)))
    }
}

/// A plugin's field value as a CEL value. Floats JSON cannot show (NaN,
/// infinities) are null, as the record's JSON shows them.
fn field_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Null => Value::Null,
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Int(i) => Value::Int(*i),
        FieldValue::Float(f) if f.is_finite() => Value::Float(*f),
        FieldValue::Float(_) => Value::Null,
        FieldValue::Str(s) => Value::from(s.as_str()),
        FieldValue::List(a) => Value::List(Arc::new(a.iter().map(field_value).collect())),
        FieldValue::Map(o) => Value::from(o.iter().map(|(k, v)| (k, field_value(v))).collect::<HashMap<&str, Value>>()),
    }
}

fn endpoint(e: &RecordEndpoint) -> Value {
    let w = e.workload.as_ref();
    let kind = w.map_or("external", |w| w.kind());
    let name = w.map_or_else(|| e.ip.to_string(), |w| w.name().to_string());
    let namespace = w.map_or_else(String::new, |w| w.namespace().to_string());
    let pod_name = if kind == "pod" { name.clone() } else { String::new() };
    let pod_ns = if kind == "pod" { namespace.clone() } else { String::new() };
    let service = if kind == "service" { name.clone() } else { String::new() };
    let mut m: HashMap<&str, Value> = HashMap::new();
    m.insert("ip", Value::from(e.ip.to_string()));
    m.insert("port", Value::Int(i64::from(e.port)));
    m.insert("kind", Value::from(kind));
    m.insert("name", Value::from(name));
    m.insert("namespace", Value::from(namespace));
    m.insert("node", Value::from(w.and_then(|w| w.node()).unwrap_or_default()));
    m.insert("resolution_status", Value::from(e.resolution_status.as_str()));
    m.insert("pod", Value::from(HashMap::from([("name", Value::from(pod_name)), ("namespace", Value::from(pod_ns))])));
    m.insert("service", Value::from(HashMap::from([("name", Value::from(service))])));
    Value::from(m)
}

fn variables(r: &L7Record, protocols: &[LegendEntry]) -> Vec<(String, Value)> {
    let transport = r.transport.as_str();
    let mut v: Vec<(String, Value)> = Vec::with_capacity(32 + r.fields.len());
    // Plugin fields first: the KFL2 variables bound after them win, since
    // a later binding of a name replaces an earlier one.
    for (k, val) in &r.fields {
        v.push((k.to_string(), field_value(val)));
    }
    let workloads = [&r.src, &r.dst].map(|e| e.workload.clone());
    let collect = |kind: &str| -> Value {
        let names: Vec<Value> =
            workloads.iter().flatten().filter(|w| w.kind() == kind).map(|w| Value::from(w.name())).collect();
        Value::List(Arc::new(names))
    };
    let mut namespaces: Vec<String> = workloads.iter().flatten().map(|w| w.namespace().to_string()).collect();
    namespaces.dedup();
    let node = workloads.iter().rev().flatten().find_map(|w| w.node()).unwrap_or_default().to_string();
    let field_str = |k: &str| r.fields.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let url = field_str("url").unwrap_or_else(|| r.summary.clone());
    let path = field_str("path").unwrap_or_else(|| url.split('?').next().unwrap_or_default().to_string());
    let ts = r.ts().0;
    let timestamp = chrono::DateTime::from_timestamp((ts / 1_000_000_000) as i64, (ts % 1_000_000_000) as u32)
        .unwrap_or_default()
        .fixed_offset();
    v.push(("src".into(), endpoint(&r.src)));
    v.push(("dst".into(), endpoint(&r.dst)));
    // Kubeshark's spelling of the same.
    v.push(("src_resolution_status".into(), Value::from(r.src.resolution_status.as_str())));
    v.push(("dst_resolution_status".into(), Value::from(r.dst.resolution_status.as_str())));
    v.push(("namespaces".into(), Value::List(Arc::new(namespaces.into_iter().map(Value::from).collect()))));
    v.push(("pods".into(), collect("pod")));
    v.push(("services".into(), collect("service")));
    v.push(("node_name".into(), Value::from(node)));
    v.push(("tls".into(), Value::Bool(r.tls)));
    v.push(("tls_sni".into(), Value::from(r.tls_sni.clone().unwrap_or_default())));
    v.push(("protocol".into(), Value::from(r.protocol.as_str())));
    // Protocol flags come from the plugins, so a new plugin's name is a
    // flag with no change here; the record's own protocol is one even when
    // its plugin is loaded elsewhere (a worker's plugin, seen by the hub).
    for p in protocols.iter().map(|e| e.protocol.as_str()).filter(|p| *p != r.protocol) {
        v.push((p.into(), Value::Bool(false)));
    }
    v.push((r.protocol.clone(), Value::Bool(true)));
    v.push(("tcp".into(), Value::Bool(transport == "tcp")));
    v.push(("udp".into(), Value::Bool(transport == "udp")));
    v.push(("method".into(), Value::from(r.method.as_str())));
    v.push(("path".into(), Value::from(path)));
    v.push(("url".into(), Value::from(url)));
    // The virtual host asked for: HTTP/1's Host, HTTP/2's :authority (both
    // the plugins' `host` field), as sent.
    v.push(("authority".into(), field_str("host").map_or(Value::Null, Value::from)));
    v.push(("summary".into(), Value::from(r.summary.as_str())));
    v.push(("status_code".into(), r.status_code.map_or(Value::Null, Value::Int)));
    v.push(("error".into(), Value::Bool(r.error)));
    v.push(("elapsed_time".into(), r.elapsed_us.map_or(Value::Null, |us| Value::Int(us as i64))));
    v.push(("timestamp".into(), Value::Timestamp(timestamp)));
    v.push(("request_size".into(), Value::Int(r.request_size as i64)));
    v.push(("response_size".into(), Value::Int(r.response_size as i64)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costly_filters_are_refused_with_the_reason() {
        assert!(Filter::compile("http && status_code >= 500").is_ok());
        assert!(Filter::compile(r#"pods.exists(p, p.startsWith("front"))"#).is_ok());
        assert!(Filter::compile("[1, 2].all(x, [3, 4].exists(y, x < y))").is_ok());
        let nested = "[1].all(a, [2].all(b, [3].all(c, a < b && b < c)))";
        let e = Filter::compile(nested).unwrap_err();
        assert!(e.message.contains("nested 3 deep"), "{e}");
        let eight = (0..8).fold("true".to_string(), |inner, i| format!("[1,2,3].all(x{i}, {inner})"));
        assert!(Filter::compile(&eight).unwrap_err().message.contains("too costly"));
        let wide = (0..200).map(|i| format!("a=={i}")).collect::<Vec<_>>().join("||");
        assert!(Filter::compile(&wide).unwrap_err().message.contains("too large"));
    }
}
