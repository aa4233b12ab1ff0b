//! trawl's MCP server: the workload map as tools an AI assistant calls,
//! built on the official Rust MCP SDK (`rmcp`).
//!
//! The tools read trawl's own HTTP API (`/api/map`, `/api/diff`,
//! `/api/records`, `/api/plugins`), so what an assistant is told is what
//! the UI and the API show. Where that API is depends on the transport:
//! `trawl mcp` (stdio) reads a hub's over HTTP; `/api/mcp` (streamable
//! HTTP, authenticated like the rest of the API) calls the serving
//! process's routes in-process. Answers are cut to fit an assistant's
//! context: the heaviest edges first, numbers rounded, strings cut.
#![forbid(unsafe_code)]

pub mod compact;
mod route;
pub mod source;

pub use route::route;
pub use source::{Fetch, FetchError, http_fetch};

use rmcp::handler::server::{router::tool::ToolRouter, wrapper::Parameters};
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Edges a map answer lists unless asked for more.
const DEFAULT_EDGES: u32 = 50;
/// Most edges, workloads or records any answer lists.
const MAX_ITEMS: u32 = 500;

/// Which map, grouped how, filtered how, over which window: the query of
/// `/api/map`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct MapQuery {
    /// `l7` (dissected requests: HTTP, gRPC, DNS, Redis, Kafka…; the
    /// default) or `l4` (every TCP/UDP connection).
    pub map: Option<String>,
    /// `pod` (pods, services, nodes; the default), `namespace` or `node`.
    pub group_by: Option<String>,
    /// A KFL2 display filter (CEL), e.g. `http && status_code >= 500` or
    /// `dst.namespace == "shop"`. L7 only.
    pub filter: Option<String>,
    /// Window start: unix seconds, RFC 3339, `now-15m`. Omit for live.
    pub from: Option<String>,
    /// Window end, as `from`; `now` by default when `from` is given.
    pub to: Option<String>,
}

impl MapQuery {
    fn is_l7(&self) -> bool {
        self.map.as_deref().is_none_or(|m| m != "l4")
    }

    /// The query string, `map` set to `map_kind`.
    fn query(&self, map_kind: &str) -> String {
        let mut q = form(&[("map", Some(map_kind)), ("group_by", self.group_by.as_deref())]);
        if map_kind == "l7" {
            q.push_str(&form(&[("filter", self.filter.as_deref())]));
        }
        q + &form(&[("from", self.from.as_deref()), ("to", self.to.as_deref())])
    }
}

/// `&k=v` for every value given, percent-encoded.
fn form(pairs: &[(&str, Option<&str>)]) -> String {
    pairs.iter().filter_map(|(k, v)| Some(format!("&{k}={}", encode(v.filter(|v| !v.is_empty())?)))).collect()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetMapArgs {
    #[serde(flatten)]
    pub query: MapQuery,
    /// Only edges with an end in this namespace.
    pub namespace: Option<String>,
    /// Most edges listed, heaviest first (50 by default, at most 500).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetEdgeArgs {
    /// The edge's id as `get_map` lists it (`source|target|protocol`, or
    /// `source|target|tcp` for an L4 edge).
    pub id: String,
    /// `pod` (default), `namespace` or `node`: the grouping the id is of.
    pub group_by: Option<String>,
    /// Window start (see `get_map`). Omit for live.
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FindWorkloadArgs {
    /// Part of a pod, service, node or namespace name (any case).
    pub query: String,
    /// Most workloads listed (20 by default).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QueryRecordsArgs {
    /// A KFL2 display filter (CEL), e.g. `redis && error` or
    /// `http && request.path.startsWith("/api")`. Omit for every record.
    pub filter: Option<String>,
    /// Most records, newest first (20 by default, at most 500).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DiffMapsArgs {
    /// The earlier window as `FROM,TO` (unix seconds, RFC 3339 or
    /// `now-1h`), e.g. `now-2h,now-1h`.
    pub before: String,
    /// The later window as `FROM,TO`, e.g. `now-1h,now`.
    pub after: String,
    /// `l7` (default) or `l4`.
    pub map: Option<String>,
    /// `pod` (default), `namespace` or `node`.
    pub group_by: Option<String>,
    /// Most edges listed per kind of change (50 by default).
    pub limit: Option<u32>,
}

/// The server: its tools read trawl's API through `fetch`.
#[derive(Clone)]
pub struct TrawlMcp {
    fetch: Fetch,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for TrawlMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrawlMcp").finish_non_exhaustive()
    }
}

fn answer(v: Result<Value, FetchError>) -> CallToolResult {
    match v {
        Ok(v) => CallToolResult::success(vec![ContentBlock::text(v.to_string())]),
        // The assistant reads why (a bad filter, an unknown edge) and can
        // try again; the API's own words are the clearest.
        Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
    }
}

fn limit(given: Option<u32>, default: u32) -> usize {
    given.unwrap_or(default).clamp(1, MAX_ITEMS) as usize
}

#[tool_router]
impl TrawlMcp {
    pub fn new(fetch: Fetch) -> Self {
        TrawlMcp { fetch, tool_router: Self::tool_router() }
    }

    async fn get(&self, path: String) -> Result<Value, FetchError> {
        (self.fetch)(path).await
    }

    #[tool(
        description = "The workload map: which workloads talk to which, with requests, errors, error rate, p50/p99 latency (L7) or bytes, packets and TCP health (L4). Heaviest edges first."
    )]
    async fn get_map(&self, Parameters(a): Parameters<GetMapArgs>) -> CallToolResult {
        let kind = if a.query.is_l7() { "l7" } else { "l4" };
        let map = self.get(format!("/api/map?{}", a.query.query(kind).trim_start_matches('&'))).await;
        answer(map.map(|m| compact::map(&m, kind == "l7", a.namespace.as_deref(), limit(a.limit, DEFAULT_EDGES))))
    }

    #[tool(
        description = "One edge in detail: RED metrics (rate, errors, p50/p95/p99 latency), its top calls, and the TCP health of the connections beneath it; for an L4 edge, the L7 protocols over it."
    )]
    async fn get_edge(&self, Parameters(a): Parameters<GetEdgeArgs>) -> CallToolResult {
        let q = MapQuery { group_by: a.group_by, from: a.from, to: a.to, ..MapQuery::default() };
        let l7 = self.get(format!("/api/map?{}", q.query("l7").trim_start_matches('&'))).await;
        let l4 = self.get(format!("/api/map?{}", q.query("l4").trim_start_matches('&'))).await;
        answer(l7.and_then(|l7| Ok((l7, l4?))).and_then(|(l7, l4)| {
            compact::edge(&a.id, &l7, &l4)
                .ok_or_else(|| FetchError::NotFound(format!("no edge {:?} in this map", a.id)))
        }))
    }

    #[tool(
        description = "Find workloads (pods, services, nodes, outside addresses) by part of their name or namespace, with whom each calls and is called by."
    )]
    async fn find_workload(&self, Parameters(a): Parameters<FindWorkloadArgs>) -> CallToolResult {
        let l4 = self.get("/api/map?map=l4&group_by=pod".to_string()).await;
        answer(l4.map(|m| compact::workloads(&m, &a.query, limit(a.limit, 20))))
    }

    #[tool(
        description = "Recent L7 records (request/response pairs) matching a KFL2 filter, newest first: method, summary, status, error, latency, ends and fields. Already redacted by the agent's policy; long values are cut."
    )]
    async fn query_records(&self, Parameters(a): Parameters<QueryRecordsArgs>) -> CallToolResult {
        let n = limit(a.limit, 20);
        let path = format!("/api/records?limit={n}{}", form(&[("filter", a.filter.as_deref())]));
        answer(self.get(path).await.map(|v| {
            let records: Vec<Value> = v["records"].as_array().into_iter().flatten().map(compact::record).collect();
            serde_json::json!({"filter": v["filter"], "shown": records.len(), "scanned": v["scanned"], "records": records})
        }))
    }

    #[tool(
        description = "What changed between two time windows of the map: edges added, removed, and changed (errors, latency, traffic or TCP trouble up or down), each with its reasons."
    )]
    async fn diff_maps(&self, Parameters(a): Parameters<DiffMapsArgs>) -> CallToolResult {
        let q = form(&[
            ("map", a.map.as_deref()),
            ("group_by", a.group_by.as_deref()),
            ("before", Some(&a.before)),
            ("after", Some(&a.after)),
        ]);
        let diff = self.get(format!("/api/diff?{}", q.trim_start_matches('&'))).await;
        answer(diff.map(|d| compact::diff(&d, limit(a.limit, DEFAULT_EDGES))))
    }

    #[tool(
        description = "The dissector plugins: name, version, state (active, quarantined, rejected), records and faults."
    )]
    async fn list_plugins(&self) -> CallToolResult {
        answer(self.get("/api/plugins".to_string()).await.map(|p| compact::plugins(&p)))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TrawlMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("trawl", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "trawl draws live L4/L7 workload maps of a Kubernetes cluster from captured traffic. \
                 Start with get_map (l7 for requests, l4 for every connection), then get_edge on an edge id, \
                 find_workload to locate a service, query_records for individual requests (KFL2 filters), \
                 diff_maps to see what changed between two windows.",
            )
    }
}

/// Serves the tools over stdin and stdout until the client goes away (an
/// assistant starts `trawl mcp` as its subprocess). Logs go to stderr:
/// stdout carries the protocol.
pub async fn serve_stdio(fetch: Fetch) -> Result<(), std::io::Error> {
    use rmcp::ServiceExt;
    let running = TrawlMcp::new(fetch).serve(rmcp::transport::stdio()).await.map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

/// [`serve_stdio`] on the API at `url`, on a runtime of its own.
pub fn run_stdio(url: &str, token: Option<String>) -> Result<(), std::io::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async { serve_stdio(http_fetch(url, token)).await })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_and_empty_values_left_out() {
        let q = MapQuery {
            filter: Some("http && status_code >= 500".into()),
            from: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(q.query("l7"), "&map=l7&filter=http%20%26%26%20status_code%20%3E%3D%20500");
        assert_eq!(q.query("l4"), "&map=l4", "an L4 map takes no display filter");
        assert!(MapQuery::default().is_l7());
    }
}
