//! The worker ↔ hub transport flags: TLS and the credentials that prove a
//! worker's node.

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use trawl_host::cluster::auth::{KubeReviewer, WorkerAuth};
use trawl_host::cluster::hub::WorkerAccess;
use trawl_host::cluster::tls;
use trawl_host::cluster::worker::HubTls;

/// The hub's side.
#[derive(Debug, clap::Args)]
pub(crate) struct HubTransportArgs {
    /// Shared secret any worker may present, for any node (or TRAWL_TOKEN).
    #[arg(long, env = "TRAWL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Per-node credentials: lines of `NODE CREDENTIAL`. A worker presenting
    /// one speaks for that node only.
    #[arg(long, value_name = "FILE")]
    node_credentials: Option<PathBuf>,
    /// Prove workers' nodes with their ServiceAccount tokens (TokenReview):
    /// the node is the token's pod's.
    #[arg(long)]
    kube_auth: bool,
    /// With --kube-auth: the audience the workers' tokens are minted for.
    #[arg(long, default_value = "trawl-hub", requires = "kube_auth")]
    worker_audience: String,
    /// With --kube-auth: the workers' ServiceAccount, NAMESPACE/NAME.
    #[arg(long, default_value = "trawl/trawl", requires = "kube_auth")]
    worker_service_account: String,
    /// The hub's certificate chain for workers (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept workers over plain TCP on a non-loopback address.
    #[arg(long)]
    insecure_plaintext: bool,
}

impl HubTransportArgs {
    pub(crate) fn access(&self, workers: std::net::SocketAddr) -> anyhow::Result<WorkerAccess> {
        let mut auth = WorkerAuth::new(self.token.clone());
        if let Some(file) = &self.node_credentials {
            auth = auth.with_node_credentials(file)?;
        }
        if self.kube_auth {
            let (namespace, account) =
                self.worker_service_account.split_once('/').context("--worker-service-account is NAMESPACE/NAME")?;
            let reviewer = KubeReviewer::new(&self.worker_audience, namespace, account)
                .context("--kube-auth needs the Kubernetes API")?;
            auth = auth.with_reviewer(Arc::new(reviewer));
        }
        anyhow::ensure!(
            auth.is_configured(),
            "workers need a way in: --token (or TRAWL_TOKEN), --node-credentials or --kube-auth"
        );
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(tls::server_files(cert, key)?)),
            _ => None,
        };
        if tls.is_none() && !workers.ip().is_loopback() {
            anyhow::ensure!(
                self.insecure_plaintext,
                "refusing to take workers on {workers} in plain TCP: their records and credentials would cross the \
                 network readable. Give --tls-cert and --tls-key, listen on loopback, or pass --insecure-plaintext"
            );
            eprintln!(
                "trawl hub: WARNING: --insecure-plaintext: workers' records and credentials cross the network in the clear"
            );
        }
        Ok(WorkerAccess { tls, auth })
    }
}

/// The worker's side.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerTransportArgs {
    /// Credential for the hub: the shared secret or this node's own (or TRAWL_TOKEN).
    #[arg(long, env = "TRAWL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Read the credential from this file on every connect (a projected
    /// ServiceAccount token, which rotates).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The CA that signed the hub's certificate (PEM): talk TLS and check it.
    #[arg(long, value_name = "FILE")]
    hub_ca: Option<PathBuf>,
    /// The name the hub's certificate must carry (default: the host of --hub).
    #[arg(long, value_name = "NAME", requires = "hub_ca")]
    hub_name: Option<String>,
    /// Talk to a hub that is not on loopback over plain TCP.
    #[arg(long)]
    insecure_plaintext: bool,
}

impl WorkerTransportArgs {
    /// The credential (or its file) and the TLS settings for `hub`.
    pub(crate) fn settings(&self, hub: &str) -> anyhow::Result<(String, Option<PathBuf>, Option<HubTls>)> {
        let host = hub.rsplit_once(':').map_or(hub, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let tls = match &self.hub_ca {
            Some(ca) => Some(HubTls {
                config: Arc::new(tls::client_files(ca)?),
                name: tls::server_name(self.hub_name.as_deref().unwrap_or(host))?,
            }),
            None => None,
        };
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if tls.is_none() && !loopback {
            anyhow::ensure!(
                self.insecure_plaintext,
                "refusing to send records to {hub} in plain TCP: give --hub-ca (the CA of the hub's certificate), \
                 or pass --insecure-plaintext"
            );
        }
        let token = self.token.clone().unwrap_or_default();
        anyhow::ensure!(
            !token.is_empty() || self.token_file.is_some(),
            "the hub needs a credential: --token (or TRAWL_TOKEN) or --token-file"
        );
        Ok((token, self.token_file.clone(), tls))
    }
}
