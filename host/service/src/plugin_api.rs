//! `PUT /api/plugins/NAME` (the module as the body, a detached signature
//! in `X-Trawl-Signature`) and `DELETE /api/plugins/NAME` on a hub: the
//! admin token, and never from another site's page. A refused push says
//! why and changes nothing. And `GET /api/export`: any map in another
//! tool's format; `GET /api/graph/*`: the map for Grafana's Node Graph.

use super::api::{guard, same_origin, with_state};
use super::auth::{Access, Need};
use super::pushed::{HubPlugins, PushError};
use super::{SharedState, lock};
use serde_json::json;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

fn answer(body: serde_json::Value, status: u16) -> warp::reply::Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn refused(e: &PushError) -> warp::reply::Response {
    answer(json!({"error": e.to_string()}), e.status())
}

fn cross_origin() -> warp::reply::Response {
    answer(json!({"error": "cross-origin request refused"}), 403)
}

async fn put(
    name: String,
    origin: Option<String>,
    host: Option<String>,
    signature: Option<String>,
    body: warp::hyper::body::Bytes,
    state: SharedState,
) -> Result<warp::reply::Response, Rejection> {
    if !same_origin(origin.as_deref(), host.as_deref()) {
        return Ok(cross_origin());
    }
    let (config, runtime) = match lock(&state).pushed_plugins() {
        Some(hub) => (hub.config().clone(), Arc::clone(hub.runtime())),
        None => return Ok(refused(&PushError::NotAHub)),
    };
    // Compiling takes a while: on a blocking thread, without the lock.
    // Its files are written (and synced) there too; the lock only renames.
    let checked = tokio::task::spawn_blocking(move || {
        let pushed = HubPlugins::validate(&config, &runtime, &name, &body, signature.as_deref().map(str::as_bytes))?;
        let staged = HubPlugins::stage(&config, &pushed)?;
        Ok::<_, PushError>((pushed, staged))
    })
    .await;
    let (pushed, staged) = match checked {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "plugin push refused");
            return Ok(refused(&e));
        }
        Err(e) => return Ok(answer(json!({"error": format!("validation failed: {e}")}), 500)),
    };
    let summary = json!({
        "name": pushed.status.name,
        "version": pushed.status.version,
        "sha256": pushed.sha256,
        "abi": pushed.abi,
        "bytes": pushed.module.len(),
        "signed": pushed.signature.is_some(),
    });
    let mut st = lock(&state);
    match st.accept_pushed(pushed, staged) {
        Ok(()) => {
            let workers = st.workers().values().filter(|w| w.connected).count();
            tracing::info!(plugin = %summary["name"], version = %summary["version"], workers, "plugin pushed");
            let mut reply = summary;
            reply["workers"] = json!(workers);
            Ok(answer(reply, 201))
        }
        Err(e) => Ok(refused(&e)),
    }
}

/// The push and delete routes.
pub(crate) fn routes(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let put = warp::put()
        .and(warp::path!("api" / "plugins" / String))
        .and(guard(access.clone(), Need::Admin))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("x-trawl-signature"))
        .and(warp::body::content_length_limit(trawl_runtime::wasm::MAX_MODULE_BYTES as u64))
        .and(warp::body::bytes())
        .and(with_state(state.clone()))
        .and_then(put);
    let delete = warp::delete()
        .and(warp::path!("api" / "plugins" / String))
        .and(guard(access, Need::Admin))
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("host"))
        .and(with_state(state))
        .map(|name: String, origin: Option<String>, host: Option<String>, s: SharedState| {
            if !same_origin(origin.as_deref(), host.as_deref()) {
                return cross_origin();
            }
            match lock(&s).delete_pushed(&name) {
                Ok(gone) => {
                    tracing::info!(plugin = %name, "pushed plugin deleted");
                    answer(json!({"deleted": name, "sha256": gone.sha256}), 200)
                }
                Err(e) => refused(&e),
            }
        });
    put.or(delete).unify()
}

/// The map `/api/map` answers `spec` with, built off the async threads;
/// or the answer saying why not.
async fn served_map(spec: super::SubscriptionSpec, s: SharedState) -> Result<serde_json::Value, warp::reply::Response> {
    match tokio::task::spawn_blocking(move || super::api::map_value(spec, &s, super::api::MAP_DEADLINE)).await {
        Ok(Ok(map)) => Ok(map),
        Ok(Err((status, body))) => Err(answer(body, status.as_u16())),
        Err(e) => Err(answer(json!({"error": format!("the map could not be built: {e}")}), 500)),
    }
}

/// `GET /api/export?format=dot|graphml|gexf|cytoscape&…`: the map that
/// `/api/map` answers with the same query (type, grouping, filter,
/// window), in another tool's format, as a download.
pub(crate) fn export_route(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    #[derive(serde::Deserialize)]
    struct Format {
        format: Option<String>,
    }
    warp::get()
        .and(warp::path!("api" / "export"))
        .and(guard(access, Need::Read))
        .and(warp::query::<Format>())
        .and(warp::query::<super::SubscriptionSpec>())
        .and(with_state(state))
        .and_then(|f: Format, spec: super::SubscriptionSpec, s: SharedState| async move {
            let format = match f.format.as_deref().unwrap_or("").parse::<trawl_core::export::Format>() {
                Ok(format) => format,
                Err(e) => return Ok::<_, Rejection>(answer(json!({"error": e}), 400)),
            };
            Ok(match served_map(spec, s).await {
                Ok(map) => {
                    let body = trawl_core::export::ExportGraph::from_map_json(&map).render(format);
                    let disposition = format!("attachment; filename=\"trawl-map.{}\"", format.extension());
                    let reply = warp::reply::with_header(body, "content-type", format.content_type());
                    warp::reply::with_header(reply, "content-disposition", disposition).into_response()
                }
                Err(refused) => refused,
            })
        })
}

/// Grafana's Node Graph API data source: `GET /api/graph/fields` and
/// `GET /api/graph/data?…` (the same query as `/api/map`); its health
/// check is `/api/health`.
pub(crate) fn nodegraph_routes(
    state: SharedState,
    access: Arc<Access>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let fields = warp::get()
        .and(warp::path!("api" / "graph" / "fields"))
        .and(guard(access.clone(), Need::Read))
        .map(|| warp::reply::json(&super::nodegraph::fields()).into_response());
    let data = warp::get()
        .and(warp::path!("api" / "graph" / "data"))
        .and(guard(access, Need::Read))
        .and(warp::query::<super::SubscriptionSpec>())
        .and(with_state(state))
        .and_then(|spec: super::SubscriptionSpec, s: SharedState| async move {
            Ok::<_, Rejection>(match served_map(spec, s).await {
                Ok(map) => answer(super::nodegraph::data(&map), 200),
                Err(refused) => refused,
            })
        });
    fields.or(data).unify()
}
