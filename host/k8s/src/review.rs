//! Which node a worker runs on, proved by its ServiceAccount token: the
//! hub sends the token to the API server in a TokenReview (audience
//! `trawl-hub`, so a token minted for anything else is refused) and takes
//! the node from what the API server says about the token's pod, never
//! from what the worker says.
//!
//! A bound token names its pod and (since Kubernetes 1.30, with
//! `ServiceAccountTokenPodNodeInfo`) its node in the user's extra fields;
//! without the node, the pod is looked up.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};

/// The user extra that names a bound token's node.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The user extra that names a bound token's pod.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Why a token does not prove a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the API server did not authenticate the token: {0}")]
    NotAuthenticated(String),
    #[error("the token belongs to {0}, not to the workers' ServiceAccount {1}")]
    WrongAccount(String, String),
    #[error("the token is not bound to a pod")]
    NotBound,
    #[error("the token's pod {0} runs on no node")]
    NoNode(String),
    #[error("cannot ask the API server: {0}")]
    Api(String),
}

/// What the API server says a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub username: String,
    pub node: String,
    pub pod: Option<String>,
}

/// Reviews `token` for `audience`; it must belong to ServiceAccount
/// `namespace/account` and be bound to a pod, whose node it returns.
pub async fn review_token(
    client: Client,
    token: &str,
    audience: &str,
    namespace: &str,
    account: &str,
) -> Result<Reviewed, ReviewError> {
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![audience.to_string()]) },
        ..TokenReview::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.map_err(|e| ReviewError::Api(e.to_string()))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(ReviewError::NotAuthenticated(status.error.unwrap_or_else(|| "not authenticated".into())));
    }
    // A client that names audiences must see them confirmed: an
    // authenticator that ignores audiences answers without them.
    if !status.audiences.as_ref().is_some_and(|a| a.iter().any(|x| x == audience)) {
        return Err(ReviewError::NotAuthenticated(format!("not for the audience {audience}")));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let want = format!("system:serviceaccount:{namespace}:{account}");
    if username != want {
        return Err(ReviewError::WrongAccount(username, want));
    }
    let extra = user.extra.unwrap_or_default();
    let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
    let pod = first(POD_NAME_EXTRA);
    let node = match first(NODE_NAME_EXTRA) {
        Some(n) => n,
        None => {
            let Some(pod) = pod.clone() else { return Err(ReviewError::NotBound) };
            let pods: Api<Pod> = Api::namespaced(client, namespace);
            let p = pods.get(&pod).await.map_err(|e| ReviewError::Api(e.to_string()))?;
            p.spec.and_then(|s| s.node_name).ok_or(ReviewError::NoNode(pod))?
        }
    };
    Ok(Reviewed { username, node, pod })
}
