//! Where the tools read trawl's API: a function from a path and query to
//! the JSON answer. `trawl mcp` reads a hub's API over HTTP with
//! [`http_fetch`]; the in-process `/api/mcp` calls the serving routes.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// `GET path` (with its query) on trawl's API, as JSON.
pub type Fetch = Arc<dyn Fn(String) -> BoxFuture<'static, Result<Value, FetchError>> + Send + Sync>;

/// Most bytes of one API answer a tool reads.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How long one API call may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The API answered with an error (a bad filter, a bad window).
    #[error("trawl answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("cannot reach trawl's API: {0}")]
    Unreachable(String),
    #[error("trawl's answer is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    NotFound(String),
}

/// An answer's status and body as a tool's result: the API's own
/// `{"error": …}` words when it refused.
pub fn decode(status: u16, body: &[u8]) -> Result<Value, FetchError> {
    let v: Result<Value, _> = serde_json::from_slice(body);
    if !(200..300).contains(&status) {
        let message = match &v {
            Ok(v) => v["error"].as_str().map_or_else(|| v.to_string(), str::to_string),
            Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        };
        return Err(FetchError::Api { status, message });
    }
    v.map_err(|e| FetchError::NotJson(e.to_string()))
}

/// Reads `base` (`http://host:port`) over HTTP/1, with `token` as the
/// bearer token when given.
pub fn http_fetch(base: &str, token: Option<String>) -> Fetch {
    let base = base.trim_end_matches('/').to_string();
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    Arc::new(move |path: String| {
        let (client, url, token) = (client.clone(), format!("{base}{path}"), token.clone());
        Box::pin(async move {
            let mut req = http::Request::get(&url);
            if let Some(t) = &token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(Full::new(Bytes::new())).map_err(|e| FetchError::Unreachable(e.to_string()))?;
            let call = async {
                let resp = client.request(req).await.map_err(|e| FetchError::Unreachable(format!("{url}: {e}")))?;
                let status = resp.status().as_u16();
                let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|e| FetchError::Unreachable(e.to_string()))?
                    .to_bytes();
                decode(status, &body)
            };
            tokio::time::timeout(TIMEOUT, call)
                .await
                .unwrap_or_else(|_| Err(FetchError::Unreachable(format!("{url}: no answer in {TIMEOUT:?}"))))
        })
    })
}
