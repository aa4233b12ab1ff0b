//! `GET /api/records?filter=KFL2&limit=N`: the newest records of the
//! record log that a display filter matches, newest first, as Kubeshark's
//! API tab lists them (and the MCP server's `query_records` reads them).
//! Records are already redacted as the agent's policy says when they are
//! made; this answers with at most [`MAX_LIMIT`] and scans at most
//! [`MAX_SCANNED`] of them.

use super::api::{guard, with_state};
use super::auth::{Access, Need};
use super::filter::Filter as Kfl2;
use super::{SharedState, lock};
use serde_json::json;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// Most records one answer carries.
pub const MAX_LIMIT: usize = 1_000;
const DEFAULT_LIMIT: usize = 100;
/// Most records one answer reads: bounds a filter that matches little.
pub const MAX_SCANNED: usize = 1_000_000;

#[derive(Debug, serde::Deserialize)]
struct Query {
    filter: Option<String>,
    limit: Option<usize>,
}

/// The answer to one query: the records, and how much of the log was read.
pub fn query(state: &SharedState, filter: Option<&str>, limit: usize) -> Result<serde_json::Value, String> {
    // Under the lock: the filter compiled against the vocabulary, and the
    // newest records shared (not copied); they are read after it.
    let (filter, legend, newest, held, evicted) = {
        let st = lock(state);
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(source) => Kfl2::compile_in(source, &st.vocabulary()).map_err(|e| e.to_string())?,
            None => Kfl2::all(),
        };
        let (first, log) = st.records_since(0);
        let newest: Vec<_> = log.rev().take(MAX_SCANNED).cloned().collect();
        let held = st.next_seq() - first;
        (filter, st.legend().to_vec(), newest, held, st.counters().records_log_evicted)
    };
    let limit = limit.min(MAX_LIMIT);
    let mut records = Vec::new();
    let mut scanned = 0usize;
    for r in &newest {
        if records.len() >= limit {
            break;
        }
        scanned += 1;
        if filter.matches(r, &legend) {
            records.push(serde_json::to_value(&**r).unwrap_or_default());
        }
    }
    Ok(json!({
        "filter": filter.source(),
        "records": records,
        "scanned": scanned,
        "held": held,
        // Older records left the log (its budget): a reader sees fewer.
        "evicted": evicted,
    }))
}

pub(crate) fn route(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path!("api" / "records"))
        .and(guard(access, Need::Read))
        .and(warp::query::<Query>())
        .and(with_state(state))
        .and_then(|q: Query, s: SharedState| async move {
            let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
            let answer = tokio::task::spawn_blocking(move || query(&s, q.filter.as_deref(), limit)).await;
            let (body, status) = match answer {
                Ok(Ok(v)) => (v, StatusCode::OK),
                Ok(Err(e)) => (json!({"error": e}), StatusCode::BAD_REQUEST),
                Err(e) => (json!({"error": format!("the query failed: {e}")}), StatusCode::INTERNAL_SERVER_ERROR),
            };
            Ok::<_, Rejection>(warp::reply::with_status(warp::reply::json(&body), status).into_response())
        })
}
