//! Graph exports read by the tools they are for: DOT rendered by Graphviz
//! `dot`, GraphML and GEXF read by networkx, from `trawl replay --emit …`
//! and from a serving trawl's `GET /api/export`, each with the map's own
//! nodes, edges and numbers; and `/api/graph/*`, what Grafana's Node Graph
//! API data source reads, field by field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, tools_or_skip};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

fn demo_args(map: &str) -> Vec<String> {
    let demo = support::project_root().join("examples/demo");
    let (pcap, inventory) = (demo.join("demo.pcap"), demo.join("inventory.json"));
    ["replay", pcap.to_str().unwrap(), "--inventory", inventory.to_str().unwrap(), "--map", map]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn replay(map: &str, emit: &str) -> Vec<u8> {
    let mut args = demo_args(map);
    args.extend(["--emit".to_string(), emit.to_string()]);
    let out = support::trawl().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// What networkx reads from a file: node and edge counts, and one edge's
/// attributes (the edge from `source` to `target`).
fn networkx(py: &Path, file: &Path, reader: &str, source: &str, target: &str) -> Value {
    let script = format!(
        "import json, sys, networkx as nx\n\
         g = nx.{reader}(sys.argv[1])\n\
         e = g.get_edge_data(sys.argv[2], sys.argv[3]) or {{}}\n\
         e = next(iter(e.values()), {{}}) if g.is_multigraph() else e\n\
         print(json.dumps({{'nodes': g.number_of_nodes(), 'edges': g.number_of_edges(), 'edge': e}}, default=str))"
    );
    let out = Command::new(py).args(["-c", &script]).arg(file).args([source, target]).output().unwrap();
    assert!(out.status.success(), "networkx: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An edge alone between its two ends (a map may have several: TCP and
/// UDP, or one per protocol), so networkx names it by its ends.
fn lone_edge(map: &Value) -> &Value {
    let all = map["edges"].as_array().unwrap();
    let ends = |e: &Value| (e["source"].as_str().unwrap().to_string(), e["target"].as_str().unwrap().to_string());
    all.iter().find(|e| all.iter().filter(|o| ends(o) == ends(e)).count() == 1).unwrap()
}

#[test]
fn exports_load_in_graphviz_and_networkx_with_the_maps_numbers() {
    if !tools_or_skip(&["dot"]) {
        return;
    }
    let Some(py) = support::python_or_skip("networkx") else { return };
    let dir = support::scratch("graph-exports");
    for map_kind in ["l4", "l7"] {
        let map: Value = serde_json::from_slice(&replay(map_kind, "map")).unwrap();
        let (nodes, edges) = (map["nodes"].as_array().unwrap().len(), map["edges"].as_array().unwrap().len());
        assert!(edges > 0, "the demo's {map_kind} map has edges");
        let edge = lone_edge(&map);
        let (source, target) = (edge["source"].as_str().unwrap(), edge["target"].as_str().unwrap());

        // DOT: Graphviz lays it out, with every node's name.
        let dot = dir.join(format!("{map_kind}.dot"));
        std::fs::write(&dot, replay(map_kind, "dot")).unwrap();
        let svg = Command::new("dot").arg("-Tsvg").arg(&dot).stderr(Stdio::piped()).output().unwrap();
        assert!(svg.status.success(), "dot: {}", String::from_utf8_lossy(&svg.stderr));
        let svg = String::from_utf8_lossy(&svg.stdout);
        assert_eq!(svg.matches("class=\"node\"").count(), nodes, "one drawn node per map node");
        assert_eq!(svg.matches("class=\"edge\"").count(), edges, "one drawn edge per map edge");

        // GraphML and GEXF: networkx reads the same counts and numbers.
        for (emit, reader) in [("graphml", "read_graphml"), ("gexf", "read_gexf")] {
            let file = dir.join(format!("{map_kind}.{emit}"));
            std::fs::write(&file, replay(map_kind, emit)).unwrap();
            let got = networkx(&py, &file, reader, source, target);
            assert_eq!(
                (got["nodes"].as_u64(), got["edges"].as_u64()),
                (Some(nodes as u64), Some(edges as u64)),
                "{emit}"
            );
            let key = if map_kind == "l4" { "flows" } else { "requests" };
            assert_eq!(got["edge"][key], edge[key], "{emit}: the first edge's {key}: {got}");
        }

        // Cytoscape JSON in Kiali's shape.
        let cy: Value = serde_json::from_slice(&replay(map_kind, "cytoscape")).unwrap();
        assert_eq!(cy["elements"]["nodes"].as_array().unwrap().len(), nodes);
        assert_eq!(cy["elements"]["edges"].as_array().unwrap().len(), edges);
        assert_eq!(cy["elements"]["edges"][0]["data"]["source"], map["edges"][0]["source"]);
    }

    // The API: the served map, in the format asked for.
    let (_server, port) = support::serve_demo(&["--speed", "max"]);
    support::wait_for("the served map", || {
        support::get_json(port, "/api/map?map=l7")["edges"].as_array().is_some_and(|e| !e.is_empty())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let map = support::get_json(port, "/api/map?map=l7&group_by=namespace");
    let file = dir.join("api.graphml");
    let url = format!("http://127.0.0.1:{port}/api/export?format=graphml&map=l7&group_by=namespace");
    let out = Command::new("curl").args(["-sf", "-D", "-", "-o"]).arg(&file).arg(&url).output().unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.contains("content-type: application/graphml+xml"), "{headers}");
    let edge = lone_edge(&map);
    let got = networkx(&py, &file, "read_graphml", edge["source"].as_str().unwrap(), edge["target"].as_str().unwrap());
    assert_eq!(got["edge"]["requests"], edge["requests"], "{got}");
    assert_eq!(got["nodes"].as_u64(), Some(map["nodes"].as_array().unwrap().len() as u64));
    assert_eq!(got["edges"].as_u64(), Some(map["edges"].as_array().unwrap().len() as u64));
    let bad =
        Command::new("curl").args(["-s", &format!("http://127.0.0.1:{port}/api/export?format=png")]).output().unwrap();
    let bad: Value = serde_json::from_slice(&bad.stdout).unwrap_or(Value::Null);
    assert!(bad["error"].as_str().is_some_and(|e| e.contains("unknown export format")), "{bad}");
}
