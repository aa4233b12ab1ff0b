//! `/api/mcp`: the streamable HTTP transport (`rmcp`'s tower service)
//! mounted in warp. The caller authenticates the request first; this
//! hands it to rmcp as an `http::Request` and streams rmcp's answer back
//! (JSON, or server-sent events).

use crate::{Fetch, TrawlMcp};
use bytes::Bytes;
use http_body_util::{BodyDataStream, Full};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use warp::{Filter, Rejection, Reply};

/// The MCP endpoint for requests that reached it (mount it under a path
/// and an auth check). `shutdown` ends open event streams, so a graceful
/// shutdown does not wait on them.
pub fn route(
    fetch: Fetch,
    shutdown: CancellationToken,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        // trawl's own access rules (tokens, the Host check when open) ran
        // before this; rmcp's fixed list of local names would refuse a
        // hub reached by its Service name.
        .disable_allowed_hosts();
    let service = StreamableHttpService::new(
        move || Ok(TrawlMcp::new(fetch.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    warp::method().and(warp::header::headers_cloned()).and(warp::body::stream()).then(
        move |method: http::Method, headers: http::HeaderMap, body| {
            let service = service.clone();
            async move {
                // Read at most MAX_BODY: rmcp's own limit applies only to a
                // body already held, and a GET or DELETE has none to declare.
                let Some(body) = read_capped(body).await else {
                    let mut refused = warp::reply::Response::new(String::from("request body too large").into());
                    *refused.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                    return refused;
                };
                let mut req = http::Request::new(Full::new(body));
                *req.method_mut() = method;
                *req.uri_mut() = http::Uri::from_static("/api/mcp");
                *req.headers_mut() = headers;
                let (parts, body) = service.handle(req).await.into_parts();
                let mut out = warp::reply::stream(BodyDataStream::new(body)).into_response();
                *out.status_mut() = parts.status;
                *out.headers_mut() = parts.headers;
                out
            }
        },
    )
}

/// Most bytes of one MCP request (a JSON-RPC call is a few kilobytes).
const MAX_BODY: usize = 1 << 20;

/// A request body, if it ends within [`MAX_BODY`].
async fn read_capped<S, B>(body: S) -> Option<Bytes>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.ok()?;
        if out.len() + chunk.remaining() > MAX_BODY {
            return None;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Some(Bytes::from(out))
}
