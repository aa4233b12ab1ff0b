//! Maps in the formats other tools read: Graphviz DOT, GraphML (networkx,
//! yEd, Gephi), GEXF 1.2 (Gephi, networkx; with the window's time span) and Cytoscape
//! JSON in Kiali's `elements.nodes[].data` / `elements.edges[].data`
//! shape. The input is a map as `/api/map` and `trawl replay --emit map`
//! give it (any map type, grouping, filter or window), so every export
//! shows exactly what the map shows.
//!
//! Attributes are the map's own fields, nested ones joined with `_`
//! (`to_server_bytes`), typed as they are in the JSON. DOT comes from
//! petgraph's `Dot`; GraphML and GEXF are written here, because the GraphML
//! crate for petgraph types every attribute as a string and renames the
//! nodes, and no maintained crate writes GEXF.

use petgraph::dot::{Config, Dot};
use petgraph::graph::DiGraph;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The formats a map exports to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dot,
    GraphMl,
    Gexf,
    Cytoscape,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "dot" | "graphviz" => Ok(Format::Dot),
            "graphml" => Ok(Format::GraphMl),
            "gexf" => Ok(Format::Gexf),
            "cytoscape" | "cyjs" => Ok(Format::Cytoscape),
            _ => Err(format!("unknown export format {s:?}: dot, graphml, gexf or cytoscape")),
        }
    }
}

impl Format {
    /// The media type an HTTP answer carries.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Dot => "text/vnd.graphviz; charset=utf-8",
            Format::GraphMl => "application/graphml+xml; charset=utf-8",
            Format::Gexf => "application/gexf+xml; charset=utf-8",
            Format::Cytoscape => "application/json",
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Dot => "dot",
            Format::GraphMl => "graphml",
            Format::Gexf => "gexf",
            Format::Cytoscape => "cyjs",
        }
    }
}

/// An attribute value, typed as in the map's JSON.
#[derive(Clone, Debug, PartialEq)]
enum Attr {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Attr {
    /// Its type, by the name GraphML and GEXF both give it.
    fn type_name(&self) -> &'static str {
        match self {
            Attr::Int(_) => "long",
            Attr::Float(_) => "double",
            Attr::Bool(_) => "boolean",
            Attr::Str(_) => "string",
        }
    }

    fn json(&self) -> Value {
        match self {
            Attr::Int(i) => Value::from(*i),
            Attr::Float(f) => Value::from(*f),
            Attr::Bool(b) => Value::from(*b),
            Attr::Str(s) => Value::from(s.as_str()),
        }
    }
}

impl std::fmt::Display for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            Attr::Float(x) => write!(f, "{x}"),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Str(s) => f.write_str(s),
        }
    }
}

#[derive(Clone, Debug)]
struct Element {
    id: String,
    label: String,
    /// Edges only.
    ends: Option<(String, String)>,
    attrs: BTreeMap<String, Attr>,
}

/// A map ready to export.
#[derive(Clone, Debug)]
pub struct ExportGraph {
    nodes: Vec<Element>,
    edges: Vec<Element>,
    /// The window the map covers, in unix seconds, if it is one.
    span: Option<(f64, f64)>,
}

/// Adds `value` under `name`, objects flattened with `_`; lists of
/// `{name, count}` (top calls) become one string, other lists are left out.
fn flatten(name: &str, value: &Value, out: &mut BTreeMap<String, Attr>) {
    match value {
        Value::Bool(b) => drop(out.insert(name.to_string(), Attr::Bool(*b))),
        Value::Number(n) => {
            let attr = n.as_i64().map(Attr::Int).or_else(|| n.as_f64().map(Attr::Float));
            if let Some(a) = attr {
                out.insert(name.to_string(), a);
            }
        }
        Value::String(s) => drop(out.insert(name.to_string(), Attr::Str(s.clone()))),
        Value::Object(o) => {
            for (k, v) in o {
                flatten(&format!("{name}_{k}"), v, out);
            }
        }
        Value::Array(items) => {
            let named: Vec<String> = items
                .iter()
                .filter_map(|i| Some(format!("{} ({})", i.get("name")?.as_str()?, i.get("count")?.as_u64()?)))
                .collect();
            if !named.is_empty() {
                out.insert(name.to_string(), Attr::Str(named.join("; ")));
            }
        }
        Value::Null => {}
    }
}

fn attrs_of(o: &Map<String, Value>, skip: &[&str]) -> BTreeMap<String, Attr> {
    let mut out = BTreeMap::new();
    for (k, v) in o.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        flatten(k, v, &mut out);
    }
    out
}

impl ExportGraph {
    /// Reads a map in `/api/map`'s JSON shape. Edges whose ends are not
    /// among the nodes are left out (a map always lists both ends).
    pub fn from_map_json(map: &Value) -> Self {
        let list = |key: &str| map.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
        let nodes: Vec<Element> = list("nodes")
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|o| {
                let id = o.get("id")?.as_str()?.to_string();
                let label = o.get("name").and_then(Value::as_str).unwrap_or(&id).to_string();
                Some(Element { id, label, ends: None, attrs: attrs_of(o, &["id"]) })
            })
            .collect();
        let known: std::collections::HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        let edges = list("edges")
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|o| {
                let (source, target) = (o.get("source")?.as_str()?, o.get("target")?.as_str()?);
                if !known.contains(source) || !known.contains(target) {
                    return None;
                }
                let kind = o.get("protocol").or_else(|| o.get("l4")).and_then(Value::as_str).unwrap_or("");
                let id = match o.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_string(),
                    None => format!("{source}|{target}|{kind}"),
                };
                let attrs = attrs_of(o, &["id", "source", "target"]);
                Some(Element { id, label: kind.to_string(), ends: Some((source.into(), target.into())), attrs })
            })
            .collect();
        let window = map.get("window");
        let secs = |k: &str| window.and_then(|w| w.get(k)).and_then(Value::as_f64);
        let span = secs("from").zip(secs("to"));
        ExportGraph { nodes, edges, span }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// The map in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Dot => self.dot(),
            Format::GraphMl => self.graphml(),
            Format::Gexf => self.gexf(),
            Format::Cytoscape => self.cytoscape(),
        }
    }

    fn dot(&self) -> String {
        let mut graph = DiGraph::<&Element, &Element>::new();
        let index: BTreeMap<&str, _> = self.nodes.iter().map(|n| (n.id.as_str(), graph.add_node(n))).collect();
        for e in &self.edges {
            if let Some((s, t)) = &e.ends {
                graph.add_edge(index[s.as_str()], index[t.as_str()], e);
            }
        }
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let node_attrs = |_: &_, (_, n): (_, &&Element)| {
            let ns = n.attrs.get("namespace").map(|a| a.to_string()).unwrap_or_default();
            format!("label = \"{}\" tooltip = \"{}\" group = \"{}\"", quote(&n.label), quote(&n.id), quote(&ns))
        };
        let edge_attrs = |_: &_, e: petgraph::graph::EdgeReference<'_, &Element>| {
            let w = e.weight();
            let main = ["requests", "bytes"].iter().find_map(|k| w.attrs.get(*k).map(|v| format!("{k} {v}")));
            let label = [Some(w.label.clone()), main].into_iter().flatten().collect::<Vec<_>>().join(": ");
            format!("label = \"{}\" tooltip = \"{}\"", quote(&label), quote(&w.id))
        };
        let dot = Dot::with_attr_getters(&graph, &[Config::NodeNoLabel, Config::EdgeNoLabel], &edge_attrs, &node_attrs);
        format!("{dot:?}")
    }

    /// Every attribute name of `elements` with its type (the first seen;
    /// a name seen with two types is a string).
    fn keys(elements: &[Element]) -> BTreeMap<String, Attr> {
        let mut keys: BTreeMap<String, Attr> = BTreeMap::new();
        for (k, v) in elements.iter().flat_map(|e| &e.attrs) {
            match keys.get(k) {
                Some(seen) if seen.type_name() != v.type_name() => {
                    drop(keys.insert(k.clone(), Attr::Str(String::new())))
                }
                Some(_) => {}
                None => drop(keys.insert(k.clone(), v.clone())),
            }
        }
        keys
    }

    fn graphml(&self) -> String {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\">\n",
        );
        let (node_keys, edge_keys) = (Self::keys(&self.nodes), Self::keys(&self.edges));
        for (class, keys, prefix) in [("node", &node_keys, "n"), ("edge", &edge_keys, "e")] {
            for (name, sample) in keys {
                let ty = sample.type_name();
                let _ = writeln!(
                    out,
                    "  <key id=\"{prefix}_{}\" for=\"{class}\" attr.name=\"{}\" attr.type=\"{ty}\"/>",
                    xml(name),
                    xml(name)
                );
            }
        }
        out.push_str("  <graph id=\"trawl\" edgedefault=\"directed\">\n");
        for n in &self.nodes {
            let _ = writeln!(out, "    <node id=\"{}\">", xml(&n.id));
            write_data(&mut out, "n", &n.attrs);
            out.push_str("    </node>\n");
        }
        for e in &self.edges {
            let Some((s, t)) = &e.ends else { continue };
            let _ = writeln!(out, "    <edge id=\"{}\" source=\"{}\" target=\"{}\">", xml(&e.id), xml(s), xml(t));
            write_data(&mut out, "e", &e.attrs);
            out.push_str("    </edge>\n");
        }
        out.push_str("  </graph>\n</graphml>\n");
        out
    }

    fn gexf(&self) -> String {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gexf xmlns=\"http://www.gexf.net/1.2draft\" version=\"1.2\">\n  <meta><creator>trawl</creator></meta>\n",
        );
        // A window's map is one slice of time: every element lives through it.
        let span = self.span.map(|(from, to)| format!(" start=\"{from}\" end=\"{to}\"")).unwrap_or_default();
        let timeformat = if self.span.is_some() { " timeformat=\"double\"" } else { "" };
        let _ = writeln!(out, "  <graph defaultedgetype=\"directed\" mode=\"static\"{timeformat}{span}>");
        let (node_keys, edge_keys) = (Self::keys(&self.nodes), Self::keys(&self.edges));
        for (class, keys) in [("node", &node_keys), ("edge", &edge_keys)] {
            let _ = writeln!(out, "    <attributes class=\"{class}\">");
            for (i, (name, sample)) in keys.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "      <attribute id=\"{i}\" title=\"{}\" type=\"{}\"/>",
                    xml(name),
                    sample.type_name()
                );
            }
            out.push_str("    </attributes>\n");
        }
        let values = |out: &mut String, attrs: &BTreeMap<String, Attr>, keys: &BTreeMap<String, Attr>| {
            out.push_str("<attvalues>");
            for (i, name) in keys.keys().enumerate() {
                if let Some(v) = attrs.get(name) {
                    let _ = write!(out, "<attvalue for=\"{i}\" value=\"{}\"/>", xml(&v.to_string()));
                }
            }
            out.push_str("</attvalues>");
        };
        out.push_str("    <nodes>\n");
        for n in &self.nodes {
            let _ = write!(out, "      <node id=\"{}\" label=\"{}\"{span}>", xml(&n.id), xml(&n.label));
            values(&mut out, &n.attrs, &node_keys);
            out.push_str("</node>\n");
        }
        out.push_str("    </nodes>\n    <edges>\n");
        for e in &self.edges {
            let Some((s, t)) = &e.ends else { continue };
            let (id, label) = (xml(&e.id), xml(&e.label));
            let _ = write!(
                out,
                "      <edge id=\"{id}\" source=\"{}\" target=\"{}\" label=\"{label}\"{span}>",
                xml(s),
                xml(t)
            );
            values(&mut out, &e.attrs, &edge_keys);
            out.push_str("</edge>\n");
        }
        out.push_str("    </edges>\n  </graph>\n</gexf>\n");
        out
    }

    fn cytoscape(&self) -> String {
        let data = |e: &Element| {
            let mut d = Map::new();
            d.insert("id".into(), Value::from(e.id.as_str()));
            d.insert("label".into(), Value::from(e.label.as_str()));
            if let Some((s, t)) = &e.ends {
                d.insert("source".into(), Value::from(s.as_str()));
                d.insert("target".into(), Value::from(t.as_str()));
            }
            for (k, v) in &e.attrs {
                d.entry(k.clone()).or_insert_with(|| v.json());
            }
            serde_json::json!({ "data": d })
        };
        let doc = serde_json::json!({
            "elements": {
                "nodes": self.nodes.iter().map(data).collect::<Vec<_>>(),
                "edges": self.edges.iter().map(data).collect::<Vec<_>>(),
            }
        });
        doc.to_string()
    }
}

fn write_data(out: &mut String, prefix: &str, attrs: &BTreeMap<String, Attr>) {
    for (name, v) in attrs {
        let _ = writeln!(out, "      <data key=\"{prefix}_{}\">{}</data>", xml(name), xml(&v.to_string()));
    }
}

/// XML text and attribute escaping.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map() -> Value {
        serde_json::json!({
            "nodes": [
                {"id": "pod/shop/api", "name": "api", "namespace": "shop", "kind": "pod"},
                {"id": "pod/shop/db", "name": "db <primary>", "namespace": "shop", "kind": "pod"}
            ],
            "edges": [
                {"id": "pod/shop/api|pod/shop/db|redis", "source": "pod/shop/api", "target": "pod/shop/db",
                 "protocol": "redis", "requests": 7, "errors": 1, "latency_us": {"p99": 120},
                 "rate": {"requests_per_sec": 0.7}, "top": [{"name": "GET k", "count": 5}]},
                {"source": "pod/shop/api", "target": "pod/gone/x", "protocol": "http", "requests": 1}
            ],
            "window": {"from": 1796630000.0, "to": 1796630600.0, "resolution": 10}
        })
    }

    #[test]
    fn attributes_are_flattened_and_typed_and_dangling_edges_left_out() {
        let g = ExportGraph::from_map_json(&map());
        assert_eq!((g.node_count(), g.edge_count()), (2, 1));
        let e = &g.edges[0];
        assert_eq!(e.attrs["latency_us_p99"], Attr::Int(120));
        assert_eq!(e.attrs["rate_requests_per_sec"], Attr::Float(0.7));
        assert_eq!(e.attrs["top"], Attr::Str("GET k (5)".into()));
        assert_eq!(g.span, Some((1796630000.0, 1796630600.0)));
    }

    #[test]
    fn every_format_names_every_node_and_edge_and_escapes_text() {
        let g = ExportGraph::from_map_json(&map());
        let dot = g.render(Format::Dot);
        assert!(
            dot.starts_with("digraph") && dot.contains("db <primary>") && dot.contains("redis: requests 7"),
            "{dot}"
        );
        let graphml = g.render(Format::GraphMl);
        assert!(graphml.contains("attr.name=\"requests\" attr.type=\"long\""), "{graphml}");
        assert!(
            graphml.contains("db &lt;primary&gt;") && graphml.contains("<edge id=\"pod/shop/api|pod/shop/db|redis\"")
        );
        let gexf = g.render(Format::Gexf);
        assert!(
            gexf.contains("start=\"1796630000\" end=\"1796630600\"") && gexf.contains("timeformat=\"double\""),
            "{gexf}"
        );
        let cy: Value = serde_json::from_str(&g.render(Format::Cytoscape)).unwrap();
        assert_eq!(cy["elements"]["edges"][0]["data"]["source"], "pod/shop/api");
        assert_eq!(cy["elements"]["nodes"][1]["data"]["label"], "db <primary>");
        assert_eq!("GraphML".parse::<Format>(), Ok(Format::GraphMl));
        assert!("png".parse::<Format>().is_err());
    }
}
