//! Which node a worker speaks for. A worker's `Hello` names its node and
//! carries a credential; the hub believes the node only as far as the
//! credential proves it:
//! - a Kubernetes ServiceAccount token (a JWT), reviewed by the API server
//!   (TokenReview, audience `trawl-hub`): the node is the token's pod's;
//! - a per-node credential from `--node-credentials`: that node only;
//! - the shared `--token`: any node (a lab, or a cluster that trusts every
//!   worker's word).
//!
//! After the handshake the node is fixed for the connection: frames carry
//! no node of their own, so a worker cannot send for another one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trawl_service::auth::{digest, equal};

/// Why a worker is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its credential does not prove its node: told so, and it stops.
    Final(String),
    /// It cannot be checked now (the API server did not answer): the
    /// connection closes and the worker tries again.
    Retry(String),
}

impl Refusal {
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Final(r) | Refusal::Retry(r) => r,
        }
    }
}

/// Tells the node a ServiceAccount token belongs to.
pub trait Reviewer: Send + Sync {
    fn node_of(&self, token: &str) -> Result<String, Refusal>;
}

/// The hub's rules for workers.
#[derive(Clone, Default)]
pub struct WorkerAuth {
    shared: Option<[u8; 32]>,
    nodes: HashMap<String, [u8; 32]>,
    reviewer: Option<Arc<dyn Reviewer>>,
}

impl std::fmt::Debug for WorkerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAuth")
            .field("shared", &self.shared.is_some())
            .field("nodes", &self.nodes.len())
            .field("kubernetes", &self.reviewer.is_some())
            .finish()
    }
}

impl WorkerAuth {
    pub fn new(shared: Option<String>) -> Self {
        WorkerAuth { shared: shared.filter(|t| !t.is_empty()).as_deref().map(digest), ..Self::default() }
    }

    /// Per-node credentials: lines of `NODE CREDENTIAL`; `#` starts a comment.
    pub fn with_node_credentials(mut self, file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read node credentials {}: {e}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            // `#` starts a comment at the start of a line or after a space,
            // so a credential may hold one.
            let line = match line.find(" #").or_else(|| line.trim_start().starts_with('#').then_some(0)) {
                Some(i) => &line[..i],
                None => line,
            }
            .trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(node), Some(credential), None) = (words.next(), words.next(), words.next()) else {
                anyhow::bail!("{}:{}: expected `NODE CREDENTIAL`", file.display(), i + 1);
            };
            self.nodes.insert(node.to_string(), digest(credential));
        }
        anyhow::ensure!(!self.nodes.is_empty(), "{} names no node", file.display());
        Ok(self)
    }

    pub fn with_reviewer(mut self, reviewer: Arc<dyn Reviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// Whether any way in is configured.
    pub fn is_configured(&self) -> bool {
        self.shared.is_some() || !self.nodes.is_empty() || self.reviewer.is_some()
    }

    /// Whether `credential` lets a worker speak for `node`; otherwise why
    /// not, in words that name no secret.
    pub fn check(&self, node: &str, credential: &str) -> Result<(), Refusal> {
        if let Some(reviewer) = &self.reviewer
            && looks_like_jwt(credential)
        {
            let proven = reviewer.node_of(credential)?;
            return if proven == node {
                Ok(())
            } else {
                Err(Refusal::Final(format!("the ServiceAccount token is of a pod on node {proven}, not {node}")))
            };
        }
        let given = digest(credential);
        if self.nodes.get(node).is_some_and(|own| equal(own, &given))
            || self.shared.as_ref().is_some_and(|s| equal(s, &given))
        {
            return Ok(());
        }
        // The same words whether or not the credential is some other
        // node's: a refusal tells nothing about which credentials exist.
        Err(Refusal::Final(format!("wrong credential for node {node}")))
    }
}

/// A JWT: three base64url parts. Tokens from `--token` and credentials
/// files are made without dots.
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// TokenReview through the Kubernetes API, answers cached for a minute (a
/// restarted hub sees every worker reconnect at once).
pub struct KubeReviewer {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    audience: String,
    namespace: String,
    account: String,
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    budget: Mutex<Budget>,
}

/// At most [`REVIEWS_PER_SECOND`] TokenReviews a second: anyone who
/// reaches the worker port can send JWT-shaped junk, and the API server is
/// not theirs to load.
#[derive(Debug)]
struct Budget {
    second: Instant,
    used: u32,
}

const REVIEWS_PER_SECOND: u32 = 20;

impl Budget {
    fn take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            (self.second, self.used) = (now, 0);
        }
        self.used += 1;
        self.used <= REVIEWS_PER_SECOND
    }
}

impl std::fmt::Debug for KubeReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReviewer")
            .field("audience", &self.audience)
            .field("account", &format!("{}/{}", self.namespace, self.account))
            .finish()
    }
}

const CACHE_FOR: Duration = Duration::from_secs(60);
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

impl KubeReviewer {
    /// With the in-cluster configuration (or kubeconfig), for tokens of
    /// ServiceAccount `namespace/account` minted for `audience`.
    pub fn new(audience: &str, namespace: &str, account: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let client = runtime.block_on(kube::Client::try_default())?;
        Ok(Self::with_client(runtime, client, audience, namespace, account))
    }

    pub fn with_client(
        runtime: tokio::runtime::Runtime,
        client: kube::Client,
        audience: &str,
        namespace: &str,
        account: &str,
    ) -> Self {
        KubeReviewer {
            runtime,
            client,
            audience: audience.into(),
            namespace: namespace.into(),
            account: account.into(),
            cache: Mutex::new(HashMap::new()),
            budget: Mutex::new(Budget { second: Instant::now(), used: 0 }),
        }
    }
}

impl Reviewer for KubeReviewer {
    fn node_of(&self, token: &str) -> Result<String, Refusal> {
        let key = digest(token);
        let now = Instant::now();
        {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.retain(|_, (_, at)| now.duration_since(*at) < CACHE_FOR);
            if let Some((node, _)) = cache.get(&key) {
                return Ok(node.clone());
            }
        }
        let review =
            trawl_k8s::review::review_token(self.client.clone(), token, &self.audience, &self.namespace, &self.account);
        if !self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take(now) {
            return Err(Refusal::Retry("too many TokenReviews this second".into()));
        }
        let reviewed = self
            .runtime
            .block_on(async { tokio::time::timeout(REVIEW_TIMEOUT, review).await })
            .map_err(|_| Refusal::Retry("the API server did not answer the TokenReview in time".into()))?
            .map_err(|e| match e {
                trawl_k8s::review::ReviewError::Api(_) => Refusal::Retry(e.to_string()),
                _ => Refusal::Final(e.to_string()),
            })?;
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, (reviewed.node.clone(), now));
        Ok(reviewed.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str);
    impl Reviewer for Fixed {
        fn node_of(&self, _token: &str) -> Result<String, Refusal> {
            Ok(self.0.to_string())
        }
    }

    #[test]
    fn a_credential_proves_its_node_and_no_other() {
        let dir = std::env::temp_dir().join(format!("trawl-creds-{}", std::process::id()));
        std::fs::write(&dir, "# node credentials\nnode-a aaa\nnode-b bbb # b\n").unwrap();
        let auth = WorkerAuth::new(None).with_node_credentials(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(auth.check("node-a", "aaa"), Ok(()));
        assert_eq!(auth.check("node-a", "bbb"), Err(Refusal::Final("wrong credential for node node-a".into())));
        assert_eq!(auth.check("node-c", "bbb"), Err(Refusal::Final("wrong credential for node node-c".into())));
        assert!(auth.check("node-c", "zzz").is_err());
        let shared = WorkerAuth::new(Some("s".into()));
        assert_eq!(shared.check("any", "s"), Ok(()));
        assert!(shared.check("any", "t").is_err());
    }

    #[test]
    fn a_service_account_token_proves_its_pods_node() {
        let auth = WorkerAuth::new(None).with_reviewer(Arc::new(Fixed("node-a")));
        assert_eq!(auth.check("node-a", "aaa.bbb.ccc"), Ok(()));
        assert!(auth.check("node-b", "aaa.bbb.ccc").unwrap_err().reason().contains("node node-a, not node-b"));
        assert!(auth.check("node-a", "not-a-jwt").is_err());
    }
}
